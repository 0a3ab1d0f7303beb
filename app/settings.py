"""Service settings, read from the environment (prefix ``LVAD_``) or a ``.env`` file.

Each field's docstring is its documentation (also in the README's table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    """Bearer key for mutating endpoints (jobs, activate); unset: those endpoints answer 403."""
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
    max_samples: int = Field(1000, ge=1)
    """Most windows one sample request may draw."""
    micro_batching: bool = True
    """Coalesce concurrent single-window score requests into one model call."""
    batch_wait_ms: float = Field(2.0, ge=0)
    """Longest a single-window request waits for others to batch with, in milliseconds."""
    max_batch_windows: int = Field(256, ge=1)
    """Most windows in one coalesced batch."""
    promotion: Literal["if_better", "always", "manual"] = "if_better"
    """After a job: activate the new version if its validation loss is not worse than the
    active model's on the job's validation data (`if_better`), `always`, or never (`manual`)."""
    max_concurrent_jobs: int = Field(1, ge=1)
    """Training jobs that run at the same time; others queue."""
    bootstrap_demo: bool = True
    """Train a default model on the built-in demo data when the store is empty."""
    bootstrap_params: dict[str, int | float] = {}
    """Model parameters of that default model, as JSON (e.g. `{"epochs": 10}`); empty: defaults."""
    max_loaded_models: int = Field(8, ge=1)
    """Models held in memory at once; past it the least recently used one is unloaded (it
    loads again on its next request)."""
    scoring_process: bool = True
    """Run model calls of 32 rows or more (windows, or series points) in a child process
    beside the server's event loop, so parsing and answering requests never slows them
    (false: every call in the server's own process)."""
    torch_threads: int = Field(0, ge=0)
    """Threads torch and ONNX Runtime may use for scoring (0: torch's default)."""
