"""Request and response schemas of the HTTP API (Pydantic; they drive the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.http.json_body import SeriesValues, Windows
from app.registry.records import JobState
from model.errors import shorten

Strict = ConfigDict(extra="forbid", allow_inf_nan=False)


class SeriesData(BaseModel):
    """A multivariate series: optional timestamps and one list of values per variable."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "timestamps": ["2024-01-29T00:00:00Z", "2024-01-29T00:10:00Z"],
                    "variables": {"cpu_util": [31.2, 30.8], "latency_ms": [12.1, None]},
                }
            ]
        },
    )

    timestamps: list[datetime] | None = Field(
        None, description="One per point, strictly increasing. Optional."
    )
    variables: dict[str, SeriesValues] = Field(
        ...,
        min_length=1,
        description="Variable name -> values, all the same length. null is a missing value "
        "(filled by linear interpolation); NaN and Infinity are refused.",
    )

    @model_validator(mode="after")
    def _same_length(self) -> SeriesData:
        lengths = {name: len(values) for name, values in self.variables.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"variables have different lengths: {shorten(lengths, 200)}")
        n = next(iter(lengths.values()))
        if n == 0:
            raise ValueError("the series is empty")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise ValueError(f"{len(self.timestamps)} timestamps for {n} points")
        return self

    @property
    def length(self) -> int:
        return len(next(iter(self.variables.values())))


class ScoreRequest(BaseModel):
    """Either ``windows`` (a batch of T x D windows) or ``series`` (the server windows it)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "windows": [[[31.2, 1.1, 12.0, 410.0, 380.0, 12.3]] * 32],
                    "variables": [
                        "cpu_util",
                        "load_avg",
                        "mem_used_gb",
                        "net_in_mbps",
                        "net_out_mbps",
                        "latency_ms",
                    ],
                },
                {
                    "series": SeriesData.model_config["json_schema_extra"]["examples"][0],
                    "context": None,
                    "explain": "anomalies",
                },
            ]
        },
    )

    windows: Windows | None = Field(
        None,
        description="N windows of T rows of D finite numbers; T >= the model's window, "
        "equal for all.",
    )
    variables: list[str] | None = Field(
        None, description="Names of the D columns of `windows`, if not in the model's order."
    )
    series: SeriesData | None = None
    context: SeriesData | None = Field(
        None,
        description="Points that precede `series` (same variables): they fill the "
        "windows of its first points, which then are not warm-up. Not returned.",
    )
    stride: int | None = Field(None, ge=1, description="Step between the series' windows.")
    causal: bool = Field(
        False,
        description="Score each point of a series with the window ending there only.",
    )
    stream: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="Name of the stream `series` continues (e.g. a host): its flags are "
        "decided by the stream's adaptive threshold, kept by the service from one request "
        "to the next and across restarts. Send a stream's chunks in order, without "
        "overlap, the points before each as `context`.",
    )
    explain: Literal["anomalies", "all", "none"] = Field(
        "anomalies",
        description="For which steps to return the top contributing variables.",
    )
    top_k: int | None = Field(None, ge=1, le=100, description="Variables per explained step.")

    @model_validator(mode="after")
    def _one_input(self) -> ScoreRequest:
        if (self.windows is None) == (self.series is None):
            raise ValueError("give exactly one of `windows` or `series`")
        has_series_options = (
            self.context is not None or self.stride is not None or self.causal or self.stream
        )
        if self.windows is not None and has_series_options:
            raise ValueError("`context`, `stride`, `causal` and `stream` apply to `series` only")
        if self.stream is not None and self.stride is not None:
            raise ValueError("`stride` does not apply to a `stream` (every point is scored)")
        return self


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window: list[list[float]] = Field(
        ..., min_length=1, description="A T x D window to sample around (posterior)."
    )
    variables: list[str] | None = None
    n: int = Field(1, ge=1, description="Number of windows to draw.")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    noise: bool = Field(True, description="Draw from p(x|z); false returns its means.")


class SampleResponse(BaseModel):
    model: str
    model_version: int
    variables: list[str]
    source: Literal["prior", "posterior"]
    samples: list[list[list[float]]] = Field(description="n windows of T rows of D values.")


class EpochPublic(BaseModel):
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    train_nll: float
    train_kl: float
    kl_weight: float
    seconds: float


class JobPublic(BaseModel):
    id: str
    model: str = Field(description="The model this job trains a version of.")
    state: JobState
    created: str
    started: str | None
    finished: str | None
    source: str
    params: dict
    progress: float
    history: list[EpochPublic]
    error: str | None
    model_version: int | None
    promoted: bool | None
    promotion_note: str | None
    attempts: int = Field(
        0, description="Times a worker started it (scale-out: a lost worker's job is retried)."
    )


class VersionPublic(BaseModel):
    name: str
    version: int
    created: str
    source: str
    job_id: str | None
    active: bool
    validation_loss: float | None = Field(
        description="Mean negative ELBO per window on its own validation data (nats)."
    )
    feature_names: list[str]
    window: int
    threshold: float
    note: str | None


class VersionDetail(VersionPublic):
    config: dict
    threshold_detail: dict
    metadata: dict


class ModelSummary(BaseModel):
    """A named model and the version it serves."""

    name: str
    created: str
    active_version: int | None
    versions: int = Field(description="How many versions it has.")
    feature_names: list[str] | None = Field(description="The active version's variables.")
    window: int | None
    threshold: float | None
    loaded: bool = Field(description="Held in memory now (else loaded on first use).")


class ModelVersions(BaseModel):
    name: str
    active_version: int | None
    versions: list[VersionPublic] = Field(description="Newest first.")


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


class Health(BaseModel):
    status: str
    model_version: int | None = Field(None, description="The `default` model's version.")
    models: dict[str, int] = Field(
        default_factory=dict, description="Loaded models and the version each serves."
    )
