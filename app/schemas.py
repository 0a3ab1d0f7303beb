"""Request and response schemas of the HTTP API (Pydantic; they drive the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.arrays import SeriesValues, Windows
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
    explain: Literal["anomalies", "all", "none"] = Field(
        "anomalies",
        description="For which steps to return the top contributing variables.",
    )
    top_k: int | None = Field(None, ge=1, le=100, description="Variables per explained step.")

    @model_validator(mode="after")
    def _one_input(self) -> ScoreRequest:
        if (self.windows is None) == (self.series is None):
            raise ValueError("give exactly one of `windows` or `series`")
        has_series_options = self.context is not None or self.stride is not None or self.causal
        if self.windows is not None and has_series_options:
            raise ValueError("`context`, `stride` and `causal` apply to `series` only")
        return self


class Contribution(BaseModel):
    variable: str
    share: float = Field(description="Share of the step's excess surprise, 0..1.")


class AnomalyEvent(BaseModel):
    """A run of anomalous steps reported as one anomaly."""

    start: int = Field(description="Index of its first anomalous step.")
    end: int = Field(description="Index of its last anomalous step (inclusive).")
    peak: int = Field(description="Index of the step with the highest `alarm_score`.")
    alarm_score: float | None = Field(
        description="`alarm_score` at the peak (nats); null when infinite (a value far "
        "outside anything the model has seen)."
    )
    severity: float = Field(description="`severity` at the peak, 0..1.")
    top_variables: list[Contribution] = Field(
        description="The variables at fault over the whole event: each variable's largest "
        "excess surprise over its steps, as shares."
    )
    start_time: datetime | None = None
    end_time: datetime | None = None


class StepScores(BaseModel):
    """Per time step results of one window or series (arrays of equal length)."""

    score: list[float | None] = Field(
        description="Anomaly score (nats), higher = more anomalous: the ranking score, "
        "averaged over the model's `smooth_window` steps (one window by default)."
    )
    alarm_score: list[float | None] = Field(
        description="The score that meets the threshold (nats): the larger of the step's "
        "unsmoothed and smoothed score, so a short spike is not averaged away."
    )
    log_prob: list[float | None] = Field(description="Reconstruction log-probability (nats).")
    kl: list[float | None] = Field(description="KL divergence of the covering windows (nats).")
    severity: list[float | None] = Field(
        description="1 - estimated tail probability of `alarm_score`, 0..1."
    )
    is_anomaly: list[bool] = Field(description="`alarm_score` above `threshold`.")
    warm_up: list[bool] = Field(description="Fewer than T points of history.")
    top_variables: list[list[Contribution] | None]
    timestamps: list[datetime] | None = None
    anomalies: int = Field(description="Number of anomalous steps.")
    events: list[AnomalyEvent] = Field(
        description="The anomalous steps as events: runs of flagged steps, merged across "
        "gaps of up to half a window (T // 2 steps)."
    )


class ScoreResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": 1,
                    "window": 32,
                    "threshold": 15.328,
                    "variables": ["cpu_util", "latency_ms"],
                    "series": {
                        "score": [4.12, 4.31, 6.05],
                        "alarm_score": [4.12, 4.31, 26.3],
                        "log_prob": [-4.07, -4.26, -6.0],
                        "kl": [1.52, 1.55, 1.61],
                        "severity": [0.41, 0.47, 1.0],
                        "is_anomaly": [False, False, True],
                        "warm_up": [False, False, False],
                        "top_variables": [
                            None,
                            None,
                            [
                                {"variable": "latency_ms", "share": 0.94},
                                {"variable": "cpu_util", "share": 0.06},
                            ],
                        ],
                        "timestamps": [
                            "2024-01-29T00:00:00Z",
                            "2024-01-29T00:10:00Z",
                            "2024-01-29T00:20:00Z",
                        ],
                        "anomalies": 1,
                        "events": [
                            {
                                "start": 2,
                                "end": 2,
                                "peak": 2,
                                "alarm_score": 26.3,
                                "severity": 1.0,
                                "top_variables": [
                                    {"variable": "latency_ms", "share": 0.94},
                                    {"variable": "cpu_util", "share": 0.06},
                                ],
                                "start_time": "2024-01-29T00:20:00Z",
                                "end_time": "2024-01-29T00:20:00Z",
                            }
                        ],
                    },
                }
            ]
        }
    )

    model_version: int
    window: int
    threshold: float
    variables: list[str]
    windows: list[StepScores] | None = None
    series: StepScores | None = None


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
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
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


class JobPathCreate(BaseModel):
    model_config = Strict

    path: str = Field(..., min_length=1, description="File under the data directory.")
    params: dict[str, float | int] = Field(default_factory=dict)


class ModelPublic(BaseModel):
    version: int
    created: str
    source: str
    job_id: str | None
    active: bool
    validation_loss: float | None
    feature_names: list[str]
    window: int
    threshold: float
    note: str | None


class ModelDetail(ModelPublic):
    config: dict
    threshold_detail: dict
    metadata: dict


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


class Health(BaseModel):
    status: str
    model_version: int | None = None
