"""The score response: the Pydantic models that document it also build it.

A 512-window answer holds ~100k numbers. Validating them one by one as Pydantic
floats would cost more than scoring them, so the builders below use
``model_construct`` (no validation: the values come from the model, not from a
client) with the per-step arrays left as numpy arrays, and ``render`` hands the
tree to orjson, which writes contiguous arrays directly and each model as its
fields (``__dict__``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from model.alarm import Scored
from model.events import Event
from model.scoring import top_variables
from model.stream import StreamState

NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _fields(value: Any) -> dict:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"cannot serialize {type(value).__name__}")


def render(response: BaseModel) -> bytes:
    """A response model (built here, arrays as numpy) as JSON bytes."""
    return orjson.dumps(response, default=_fields, option=NUMPY)


class Contribution(TypedDict):
    """A variable at fault: a dict, not a model, since a 512-window response can hold
    thousands of them (a model object each would cost more than the rest of the
    response); the schema is the same."""

    variable: str
    share: Annotated[float, Field(description="Share of the step's excess surprise, 0..1.")]


def ranked(names: list[str], shares: np.ndarray, order: np.ndarray) -> list[Contribution]:
    """The variables in ``order`` with a positive share, as contributions."""
    values = shares.tolist()
    return [
        Contribution(variable=names[i], share=values[i]) for i in order.tolist() if values[i] > 0
    ]


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

    @classmethod
    def of(cls, scored: Scored, event: Event, names: list[str], top_k: int) -> Self:
        """``event`` of one scored window or series (arrays (n[, D]))."""
        order = top_variables(event.contributions, top_k)
        return cls.model_construct(
            start=event.start,
            end=event.end - 1,
            peak=event.peak,
            alarm_score=float(scored.alarm_score[event.peak]),
            severity=float(scored.severity[event.peak]),
            top_variables=ranked(names, event.contributions, order),
            start_time=None,
            end_time=None,
        )


class StepScores(BaseModel):
    """Per time step results of one window or series (arrays of equal length)."""

    score: list[float | None] = Field(
        description="Anomaly score (nats), higher = more anomalous: the ranking score, "
        "the step score averaged over half, once and twice the model's `smooth_window` "
        "steps (one window by default); a "
        "two-valued variable at a value it took in training counts at most the surprise "
        "of a change at its training rate."
    )
    alarm_score: list[float | None] = Field(
        description="The score that meets the threshold (nats): the larger of the step's "
        "unsmoothed and smoothed score, so a short spike is not averaged away; both "
        "count two-valued variables in full (no floor)."
    )
    log_prob: list[float | None] = Field(description="Reconstruction log-probability (nats).")
    kl: list[float | None] = Field(description="KL divergence of the covering windows (nats).")
    severity: list[float | None] = Field(
        description="1 - estimated tail probability of `alarm_score`, 0..1."
    )
    is_anomaly: list[bool] = Field(
        description="`alarm_score` above `threshold` (a stream's limit at that step), "
        "confirmed by `score` above the model's confirmation level (the "
        "`confirm_level` quantile of its validation's ranking scores), or, in a stream "
        "whose limit the bound on its tail holds up, `severity` above 1 - `risk` with "
        "`score` above the `held_level` quantile of the validation's and the stream's "
        "drift at most 0.5 (such a point counts as above the limit below); and above the "
        "90 % quantile of the recent ranking scores (the last `recent_windows` x T "
        "points not above the limit, ending 2T before) and, for a model whose training "
        "data are periodic (`metadata.period`), it or the first point of its run above "
        "the limit above the highest ranking score within T/2 of the same phase one "
        "period back; and, where fewer than `lone_others` points within T/2 before it "
        "passed these checks, `score` above the `lone_level` quantile of the "
        "validation's and the highest of the recent ones (with one, an event that "
        "starts lower is flagged from its second point); or, scored as a series (not "
        "causally), right after a flagged or carried point, within `carry_windows` x T "
        "points of the last point above the limit or flagged, with `score` above its "
        "alert's bar (a long anomaly stays flagged; a carried point starts no event); "
        "windows of exactly the model's window are not checked."
    )
    warm_up: list[bool] = Field(description="Fewer than T points of history.")
    top_variables: list[list[Contribution] | None]
    timestamps: list[datetime] | None = None
    anomalies: int = Field(description="Number of anomalous steps.")
    events: list[AnomalyEvent] = Field(
        description="The anomalous steps as events: runs of flagged steps, merged across "
        "gaps of up to half a window (T // 2 steps)."
    )

    @classmethod
    def batch(
        cls,
        scored: Scored,
        events: list[list[Event]],
        names: list[str],
        explain: str,
        top_k: int,
    ) -> list[Self]:
        """One per window of a scored batch (arrays (N, T[, D])) and its events.

        Arrays stay numpy; only the explained steps' top variables and the events are
        built as Python objects.
        """
        n, steps = scored.score.shape
        tops = _explained_tops(scored, names, explain, top_k)
        arrays = {
            name: np.ascontiguousarray(values)  # (N, T); orjson needs contiguous rows
            for name, values in (
                ("score", scored.score),
                ("alarm_score", scored.alarm_score),
                ("log_prob", scored.log_prob.sum(axis=-1)),
                ("kl", scored.kl),
                ("severity", scored.severity),
                ("is_anomaly", scored.is_anomaly),
                ("warm_up", scored.warm_up),
            )
        }
        anomalies = scored.is_anomaly.sum(axis=-1).tolist()
        return [
            cls.model_construct(
                **{name: values[i] for name, values in arrays.items()},
                top_variables=tops[i],
                timestamps=None,
                anomalies=anomalies[i],
                events=[AnomalyEvent.of(scored.pick(i), e, names, top_k) for e in events[i]],
            )
            for i in range(n)
        ]

    def with_timestamps(self, timestamps: np.ndarray) -> Self:
        """The same steps with their times (ISO 8601, UTC), events included."""
        stamps = pd.DatetimeIndex(timestamps).tz_localize("UTC")
        self.timestamps = stamps.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()  # type: ignore[assignment]
        for event in self.events:
            event.start_time = self.timestamps[event.start]
            event.end_time = self.timestamps[event.end]
        return self


def _explained_tops(
    scored: Scored, names: list[str], explain: str, top_k: int
) -> list[list[list[Contribution] | None]]:
    """The top variables of every explained step of (N, T) windows; None elsewhere."""
    n, steps = scored.score.shape
    tops: list[list[list[Contribution] | None]] = [[None] * steps for _ in range(n)]
    if explain == "none":
        return tops
    explained = scored.is_anomaly if explain == "anomalies" else np.ones((n, steps), bool)
    rows, cols = np.nonzero(explained)
    if len(rows):
        shares = scored.contributions[rows, cols]  # (E, D) for the E explained steps
        for row, col, share, order in zip(
            rows.tolist(), cols.tolist(), shares, top_variables(shares, top_k), strict=True
        ):
            tops[row][col] = ranked(names, share, order)
    return tops


SCORE_EXAMPLE = {
    "model": "default",
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
            [{"variable": "latency_ms", "share": 0.94}, {"variable": "cpu_util", "share": 0.06}],
        ],
        "timestamps": ["2024-01-29T00:00:00Z", "2024-01-29T00:10:00Z", "2024-01-29T00:20:00Z"],
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


class StreamReport(BaseModel):
    """Where a stream's alarm stands after this chunk (``stream`` of the request)."""

    name: str
    points: int = Field(description="Points of the stream decided so far (this version).")
    limit: float = Field(
        description="The alarm score the next point must exceed: the stream's adaptive "
        "threshold after this chunk (nats)."
    )
    regime_changes: int = Field(
        description="Times a third of the last W points were above the limit and the threshold "
        "was refitted on the new level (W = `regime_windows` x the window), and times that "
        "level ended and the threshold it had replaced came back."
    )
    drift: float | None = Field(
        description="Share of the last W alarm scores above the validation scores' 98 % "
        "quantile: about 0.02 on data like the training data (null before any score)."
    )
    drifting: bool = Field(
        description="`drift` over 0.5 on a full window: the model no longer describes "
        "the data; retrain it."
    )

    @classmethod
    def of(cls, name: str, state: StreamState) -> Self:
        drift = state.drift
        return cls.model_construct(
            name=name,
            points=state.seen,
            limit=state.spot.limit,
            regime_changes=state.rebaselines,
            drift=None if drift != drift else drift,
            drifting=state.drifting,
        )


class ScoreResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SCORE_EXAMPLE]})

    model: str = Field(description="The model's name.")
    model_version: int = Field(description="The version that scored this request.")
    window: int
    threshold: float = Field(
        description="The model's threshold; for a `stream`, its limit after the last point "
        "(each point's own limit decided its flag)."
    )
    variables: list[str]
    windows: list[StepScores] | None = None
    series: StepScores | None = None
    stream: StreamReport | None = None
