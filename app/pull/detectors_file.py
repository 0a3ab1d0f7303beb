"""The detectors file: where to read Prometheus, and which detectors to run (docs/pull.md).

A YAML file validated by the pydantic models below; every key is documented on its
field. ``load_detectors_file`` refuses an invalid file with ``DetectorsFileError``,
whose ``field`` is the path of the first offending key (``detectors[0].step``) and
whose message lists every problem found.
"""

from __future__ import annotations

import re
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from app.pull.durations import Duration
from model.config import ModelConfig
from model.errors import LvadError

MODEL_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DetectorsFileError(LvadError):
    """The detectors file is missing, not YAML, or does not match the format."""

    status_code = 422
    code = "invalid_detectors_file"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class BasicAuth(StrictModel):
    username: str = Field(min_length=1)
    """User name for HTTP basic authentication."""
    password: str | None = None
    """The password itself (prefer ``password_file``)."""
    password_file: Path | None = None
    """A file holding the password (read at each request, so it may be rotated)."""

    @model_validator(mode="after")
    def one_password(self) -> BasicAuth:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("give exactly one of password and password_file")
        return self


class TLSConfig(StrictModel):
    ca_file: Path | None = None
    """CA certificate(s) (PEM) that sign the server's certificate; unset: the system's."""
    cert_file: Path | None = None
    """Client certificate (PEM), for servers that require one; needs ``key_file``."""
    key_file: Path | None = None
    """The client certificate's private key (PEM)."""
    insecure_skip_verify: bool = False
    """Accept any server certificate (testing only: anyone on the path can read and alter)."""

    @model_validator(mode="after")
    def pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class PrometheusSource(StrictModel):
    url: str
    """Base URL of a Prometheus HTTP API (Prometheus, VictoriaMetrics, Thanos, Mimir...),
    e.g. ``http://127.0.0.1:9090`` or ``https://mimir.example/prometheus``."""
    headers: dict[str, str] = {}
    """Extra HTTP headers sent with every query (e.g. ``X-Scope-OrgID`` for Mimir)."""
    bearer_token_file: Path | None = None
    """A file holding a bearer token, sent as ``Authorization: Bearer``; read at each
    request, so it may be rotated."""
    basic_auth: BasicAuth | None = None
    """HTTP basic authentication (``username`` and ``password`` or ``password_file``)."""
    tls: TLSConfig = TLSConfig()
    """TLS settings for an ``https`` URL."""
    timeout: Duration = 30.0
    """Longest wait for one HTTP request (connect and read)."""
    attempts: int = Field(3, ge=1, le=10)
    """Tries per query: failures to connect, timeouts and 5xx answers are retried with
    exponential backoff; a bad query (4xx) is not."""

    @field_validator("url")
    @classmethod
    def http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def one_authorization(self) -> PrometheusSource:
        header = any(k.lower() == "authorization" for k in self.headers)
        if sum([self.basic_auth is not None, self.bearer_token_file is not None, header]) > 1:
            raise ValueError("use one of bearer_token_file, basic_auth, an Authorization header")
        return self


def _parameter_type(kind: str) -> Any:
    """A ModelConfig field's annotation as a pydantic type: integers strict (no 1.5, no
    true), real numbers also from YAML's text (``1e-3`` is a string to YAML 1.1)."""
    return StrictInt | None if kind.startswith("int") else float | None


ModelParameters = create_model(
    "ModelParameters",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{f.name: (_parameter_type(str(f.type)), None) for f in dataclass_fields(ModelConfig)},
)


def model_parameters(params: BaseModel) -> dict[str, Any]:
    """The parameters a detector sets, as ``ModelConfig().replace`` takes them."""
    return params.model_dump(exclude_unset=True)


def check_model_parameters(params: BaseModel) -> BaseModel:
    try:
        ModelConfig().replace(**model_parameters(params))
    except LvadError as exc:
        raise ValueError(exc.message) from exc
    return params


class DetectorSpec(StrictModel):
    model: str = Field(pattern=MODEL_NAME)
    """The named model that scores this detector; created by its first training."""
    queries: dict[str, str] = Field(min_length=1, max_length=256)
    """One PromQL query per variable: the alias is the variable's name."""
    group_by: list[str] = []
    """Labels whose values tell series apart: each distinct combination is one scored
    group, and its labels are kept on the exported series. Empty: one group."""
    step: Duration = 15.0
    """Spacing of the points the model sees (the range queries' step)."""
    infer_every: Duration | None = None
    """How often to score the newest points (unset: every ``step``); at least ``step``."""
    fit_every: Duration | None = 86400.0
    """How often to retrain on the last ``fit_window``; null: never retrain a model that
    exists (the first training still happens)."""
    fit_window: Duration = Field(7 * 86400.0, validate_default=True)
    """How much history a training reads."""
    fit_retry: Duration = 60.0
    """First wait before trying a training again that could not start (too little
    history, the job queue full, a failed job); doubles on each try, up to ``fit_every``."""
    params: ModelParameters = ModelParameters()  # type: ignore[valid-type]
    """Model parameters of this detector's trainings (``lvad train --set`` names them:
    ``window``, ``epochs``, ``latent_dim``...); unset ones take the defaults."""
    min_train_points: int = Field(2000, ge=16, validate_default=True)
    """A detector without a model trains as soon as its groups hold this many points
    (all groups together); at least two windows."""
    max_missing: float = Field(0.1, ge=0.0, lt=1.0)
    """Largest share of one variable's points that may be missing in a group's scoring
    context (gaps are filled by linear interpolation); above it the group is skipped."""
    max_groups: int = Field(1000, ge=1, le=100_000)
    """Most groups scored and exported; further ones are skipped (bounds the series)."""

    @field_validator("queries")
    @classmethod
    def aliases_and_queries(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, query in value.items():
            if not VARIABLE_NAME.match(alias):
                raise ValueError(f"alias {alias!r}: use letters, digits and _ (not first)")
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"alias {alias!r}: the query is empty")
        return value

    @field_validator("group_by")
    @classmethod
    def label_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a label name (reserved or invalid)")
        if len(set(value)) != len(value):
            raise ValueError("a label is named twice")
        return value

    @field_validator("infer_every")
    @classmethod
    def not_below_step(cls, value: float | None, info: ValidationInfo) -> float | None:
        step = info.data.get("step")
        if value is not None and step is not None and value < step:
            raise ValueError("must be at least step: each round scores at least one new point")
        return value

    @field_validator("fit_window")
    @classmethod
    def holds_points(cls, value: float, info: ValidationInfo) -> float:
        step = info.data.get("step")
        if step is not None and value < 16 * step:
            raise ValueError("must hold at least 16 steps")
        return value

    @field_validator("params")
    @classmethod
    def complete_configuration(cls, value: BaseModel) -> BaseModel:
        return check_model_parameters(value)

    @field_validator("min_train_points")
    @classmethod
    def two_windows(cls, value: int, info: ValidationInfo) -> int:
        params = info.data.get("params")
        window = (params and params.window) or ModelConfig.window
        if value < 2 * window:
            raise ValueError(f"training needs at least two windows ({2 * window} points)")
        return value

    @property
    def model_params(self) -> dict[str, Any]:
        return model_parameters(self.params)

    @property
    def variables(self) -> list[str]:
        return list(self.queries)

    @property
    def infer_interval(self) -> float:
        return self.infer_every or self.step


class DetectorsFile(StrictModel):
    prometheus: PrometheusSource
    """Where the detectors read their data."""
    detectors: list[DetectorSpec] = Field(min_length=1)
    """The detectors; each model name at most once."""


def field_path(location: tuple[int | str, ...]) -> str:
    """``("detectors", 0, "step")`` -> ``detectors[0].step``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (see docs/pull.md for the keys)"
    return str(error["msg"]).removeprefix("Value error, ")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                line = node.value[i][0].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated (line {line})"
                )
        return super().construct_mapping(node, deep)


def parse_detectors(text: str, source: str = "detectors file") -> DetectorsFile:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise DetectorsFileError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DetectorsFileError(f"{source}: expected a mapping with prometheus and detectors")
    try:
        parsed = DetectorsFile.model_validate(data)
    except ValidationError as exc:
        problems = [(field_path(e["loc"]), _message(e)) for e in exc.errors()]
        listed = "; ".join(f"{path}: {message}" for path, message in problems)
        raise DetectorsFileError(f"{source}: {listed}", field=problems[0][0]) from exc
    names = [detector.model for detector in parsed.detectors]
    for i, name in enumerate(names):
        if name in names[:i]:
            path = f"detectors[{i}].model"
            raise DetectorsFileError(
                f"{source}: {path}: model {name!r} has two detectors", field=path
            )
    return parsed


def load_detectors_file(path: str | Path) -> DetectorsFile:
    """The validated detectors file at ``path``; DetectorsFileError naming the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectorsFileError(f"cannot read the detectors file {path}: {exc}") from exc
    return parse_detectors(text, str(path))
