"""Service settings, read from the environment (prefix ``LVAD_``) or a ``.env`` file.

Each field's docstring is its documentation (also in the README's table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LVAD_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    store: Path = Path("var/store")
    """Model store directory: registry database, model files, job data."""
    data_dir: Path | None = None
    """Directory whose files retraining jobs may name by relative path (unset: uploads only)."""
    api_key: SecretStr | None = None
    """Bearer key for mutating endpoints (jobs, activate); unset: those endpoints answer 403.
    Set but empty or only whitespace: the service refuses to start."""
    auth_reads: bool = False
    """Also require the API key for reads (score, sample, models, jobs)."""
    host: str = "127.0.0.1"
    """Interface `lvad serve` binds to."""
    port: int = Field(8000, ge=1, le=65535)
    """Port `lvad serve` listens on."""
    log_level: str = "info"
    """Log level of the service and uvicorn."""
    max_body_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes (413 above)."""
    max_windows: int = Field(4096, ge=1)
    """Most windows in one score request."""
    max_window_length: int = Field(4096, ge=8)
    """Longest window (time steps) in a score request."""
    max_series_points: int = Field(1_000_000, ge=8)
    """Most points in one scored series, context included."""
    max_variables: int = Field(1024, ge=1)
    """Most variables a training file may have."""
    max_training_values: int = Field(10_000_000, ge=1000)
    """Most values (rows x columns) a training file may hold; checked from the file's
    header and line count, or Parquet's metadata, before it is read."""
    max_samples: int = Field(1000, ge=1)
    """Most windows one sample request may draw."""
    micro_batching: bool = True
    """Coalesce concurrent single-window score requests into one model call."""
    batch_wait_ms: float = Field(2.0, ge=0)
    """Longest a single-window request waits for others to batch with, in milliseconds."""
    max_batch_windows: int = Field(256, ge=1)
    """Most windows in one coalesced batch."""
    batch_queue_windows: int = Field(1024, ge=1)
    """Most single-window requests waiting for a micro-batch; more answer 503 with
    `Retry-After`."""
    batch_queue_timeout_s: float = Field(10.0, gt=0)
    """Longest a single-window request waits for its micro-batch to start, in seconds;
    then it answers 503 with `Retry-After`."""
    promotion: Literal["if_better", "always", "manual"] = "if_better"
    """After a job: activate the new version if its validation loss is not worse than the
    active model's on the job's validation data (`if_better`), `always`, or never (`manual`)."""
    max_concurrent_jobs: int = Field(1, ge=1)
    """Training jobs that run at the same time; others queue."""
    max_queued_jobs: int = Field(8, ge=1)
    """Most jobs waiting to run; a new one then answers 429 with `Retry-After`."""
    job_retention_hours: float = Field(168.0, ge=0)
    """How long a finished job's uploaded data (`jobs/<id>/`) is kept, in hours; its record
    and losses stay."""
    bootstrap_demo: bool = True
    """Train a default model on the built-in demo data when the store is empty."""
    bootstrap_params: dict[str, int | float] = {}
    """Model parameters of that default model, as JSON (e.g. `{"epochs": 10}`); empty: defaults."""
    max_loaded_models: int = Field(8, ge=1)
    """Models held in memory at once; past it the least recently used one is unloaded (it
    loads again on its next request)."""
    max_streams: int = Field(1000, ge=1)
    """Streams (`stream` of a score request, pull mode's groups) whose alarm state one
    model keeps (about 30 kB each with the default parameters, ~55 kB after a regime
    change, at most ~500 kB); a request for a new stream past it is refused (422)."""
    scoring_process: bool = True
    """Run model calls of 32 rows or more (windows, or series points) in a child process
    beside the server's event loop, so parsing and answering requests never slows them
    (false: every call in the server's own process)."""
    detectors: Path | None = None
    """A detectors file (YAML, docs/pull.md): read Prometheus, score with the named models
    and export the results on `/metrics` (`lvad serve --detectors FILE`); unset: no pull
    mode."""
    torch_threads: int = Field(0, ge=0)
    """Threads torch and ONNX Runtime may use for scoring (0: torch's default); on a
    worker (`lvad worker`), the threads of each training job."""
    registry_url: SecretStr | None = None
    """Scale-out (docs/deployment.md, "Scaling"): the registry in PostgreSQL, shared by
    every replica and worker, e.g. `postgresql+psycopg://lvad:PASSWORD@db:5432/lvad`
    (model files are rows there; `LVAD_STORE` is then a local cache). Needs
    `LVAD_BROKER_URL`. Unset: SQLite in `LVAD_STORE`."""
    broker_url: SecretStr | None = None
    """Scale-out: the Redis broker of training jobs, e.g. `redis://redis:6379/0`; jobs
    then run on `lvad worker` processes. Needs `LVAD_REGISTRY_URL`. Unset: jobs run in
    child processes of the service."""
    registry_pool_size: int = Field(5, ge=1, le=100)
    """Scale-out: database connections each replica or worker keeps open (a burst may
    open as many again, then closes them)."""
    refresh_interval_s: float = Field(0.5, ge=0.1, le=60)
    """Scale-out: how often a replica compares the active versions with the ones it
    serves, in seconds (an activation on any replica is served by all within about
    this plus a model load)."""
    worker_concurrency: int = Field(1, ge=1, le=64)
    """`lvad worker`: training jobs one worker runs at a time (each with
    `LVAD_TORCH_THREADS` threads, one process each)."""
    job_heartbeat_timeout_s: float = Field(60.0, ge=3, le=3600)
    """Scale-out: a running job whose worker has not written its heartbeat (every
    `LVAD_JOB_HEARTBEAT_TIMEOUT_S`/6 s) for this long is lost; it is queued again, or
    failed after `LVAD_JOB_MAX_ATTEMPTS` tries."""
    job_max_attempts: int = Field(2, ge=1, le=10)
    """Scale-out: how many times a job may start on a worker before a lost one fails."""
    job_time_limit_hours: float = Field(12.0, gt=0, le=168)
    """Scale-out: the longest a training job may run on a worker; it then fails. The
    broker's visibility timeout is this plus 10 minutes."""

    @field_validator("registry_url", "broker_url")
    @classmethod
    def _url_scheme(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        wanted = {"registry_url": "postgresql", "broker_url": "redis"}[info.field_name]
        if url is not None and not url.get_secret_value().startswith(wanted):
            raise ValueError(f"expected a {wanted}... URL (scheme {wanted}:// or {wanted}+...)")
        return url

    @model_validator(mode="after")
    def _scale_out_needs_both(self) -> Settings:
        if (self.registry_url is None) != (self.broker_url is None):
            given, missing = (
                ("LVAD_REGISTRY_URL", "LVAD_BROKER_URL")
                if self.broker_url is None
                else ("LVAD_BROKER_URL", "LVAD_REGISTRY_URL")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: replicas that share a registry "
                "run their training jobs on workers through the broker, so set both "
                "(or neither, for the embedded store)"
            )
        return self

    @property
    def scale_out(self) -> bool:
        """Replicas share a PostgreSQL registry and train on workers."""
        return self.registry_url is not None

    @field_validator("detectors", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _key_is_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "set but empty (or only whitespace), which would let any client use the "
                "mutating endpoints: set a key, or unset the variable to refuse them"
            )
        return key


def settings_problems(error: ValidationError) -> str:
    """A ValidationError of Settings as ``LVAD_NAME: message`` lines, without the values."""
    lines = []
    for problem in error.errors():
        name = "_".join(str(part) for part in problem["loc"]).upper()
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"LVAD_{name}: {message}" if name else message)
    return "; ".join(lines)
