"""The detector: one object that trains, scores, samples, saves and loads.

This is the single class the CLI and the service hand their work to. Inputs
and outputs are in the data's original units; normalization, the network and
the threshold are internal and travel together in one artifact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import artifact
from model.alarm import (
    STREAM_CAUSAL,
    STREAM_SERIES,
    UNSMOOTHED,
    Scored,
    decide,
    decide_stream,
    fit_alarm,
    ranking_score,
    threshold_scores,
)
from model.config import ModelConfig
from model.data import Table, prepare_array
from model.engine import DEFAULT_ENGINE, Engine, make_engine
from model.errors import ArtifactError, DataError, FeatureMismatchError, TrainingError
from model.events import Event, batch_events
from model.levels import LevelFloor, Taken
from model.network import LSTMVAE, fixed_noise
from model.normalize import Normalizer
from model.scoring import (
    SeriesScores,
    ranking_reach,
    score_last_points,
    score_series,
    score_window_batch,
    smooth,
    step_scores,
)
from model.season import detect_period
from model.stream import StreamState, stream_from_threshold
from model.threshold import Threshold
from model.train import (
    EpochReport,
    make_windows,
    train_network,
    training_metadata,
    validation_loss,
)


def split_point(n: int, config: ModelConfig) -> int:
    """Index where the validation tail starts; validates that both parts hold a window."""
    val_len = max(int(round(n * config.val_fraction)), config.window)
    if n - val_len < config.window:
        raise TrainingError(
            f"too little data: {n} points; training needs at least {2 * config.window} "
            f"(a window of {config.window} for training and one for validation)"
        )
    return n - val_len


def scoring_noise(config: ModelConfig) -> torch.Tensor:
    """The model's L fixed posterior draws (L, Z): a score never depends on its batch."""
    return fixed_noise(config.mc_samples, config.latent_dim, config.seed + 1)


class Detector:
    def __init__(
        self,
        net: LSTMVAE,
        config: ModelConfig,
        feature_names: list[str],
        normalizer: Normalizer,
        threshold: Threshold,
        baseline: np.ndarray,
        metadata: dict[str, Any],
        engine: Engine | None = None,
        streams: dict[str, StreamState] | None = None,
        levels: LevelFloor | None = None,
    ) -> None:
        self.net = net.eval()
        self.config = config
        self.feature_names = list(feature_names)
        self.normalizer = normalizer
        self.threshold = threshold
        self.baseline = np.asarray(baseline, dtype=np.float64)  # (D,)
        self.metadata = metadata
        self.noise = scoring_noise(config)
        self.engine = engine or make_engine(self.net, self.noise)
        # models saved before the level floor existed score without it, as they did
        self.levels = levels or LevelFloor.none()
        # a new stream's first state, per kind; models saved before streams existed
        # start from their fixed threshold
        self.streams = streams or {
            mode: stream_from_threshold(threshold, config.regime_windows * config.window, causal)
            for mode, causal in ((STREAM_SERIES, False), (STREAM_CAUSAL, True))
        }

    @property
    def window(self) -> int:
        return self.config.window

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        data: Table | np.ndarray,
        config: ModelConfig | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Detector:
        """Train on normal data (a Table or an (n, D) array), fit threshold and baseline."""
        config = config or ModelConfig()
        table = data if isinstance(data, Table) else prepare_array(data)
        values, names = table.values, table.feature_names
        cut = split_point(len(values), config)
        normalizer = Normalizer.fit(values[:cut])
        series = torch.from_numpy(normalizer.transform(values))  # (n, D) float32
        levels = LevelFloor.fit(series.numpy())
        torch.manual_seed(config.seed)
        net = LSTMVAE(len(names), config)
        started = time.perf_counter()
        result = train_network(
            net,
            make_windows(series[:cut], config.window, config.train_stride),
            make_windows(series[cut:], config.window, 1),
            config,
            on_epoch,
            should_stop,
        )
        net.eval()
        noise = scoring_noise(config)
        engine = make_engine(net, noise)
        lead_in = series[max(cut - 2 * config.window + 2, 0) :].numpy()
        n_val = len(values) - cut
        period = detect_period(series.numpy(), 2 * config.window, config.max_period)
        threshold, streams, val_log_prob = fit_alarm(engine, lead_in, n_val, config, levels, period)
        metadata = training_metadata(table, cut, result, time.perf_counter() - started)
        metadata["period"] = period
        metadata["threshold_scores"] = UNSMOOTHED
        baseline = np.median(-val_log_prob, axis=0)
        return cls(
            net, config, names, normalizer, threshold, baseline, metadata, engine, streams, levels
        )

    # ------------------------------------------------------------------ scoring
    def normalize(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_features:
            got = values.shape[-1] if values.ndim >= 1 else 0
            raise FeatureMismatchError(
                f"expected {self.n_features} variables ({', '.join(self.feature_names)}), got {got}"
            )
        return self.normalizer.transform(values)

    def _decide(
        self,
        raw: SeriesScores,
        smoothed: SeriesScores,
        ranking: np.ndarray,
        checks: StreamState | None,
    ) -> Scored:
        fitted_on = self.metadata.get("threshold_scores", UNSMOOTHED)
        return decide(raw, smoothed, self.threshold, self.baseline, fitted_on, ranking, checks)

    def score(
        self,
        values: np.ndarray,
        stride: int | None = None,
        causal: bool = False,
        context: np.ndarray | None = None,
    ) -> Scored:
        """Score a series (n, D) in original units.

        Default: every point's scores are the means over all sliding windows
        (step ``stride``) that cover it. ``causal=True``: each point is the last
        step of the window ending there, using only data up to that point.
        ``context``: points that precede ``values`` (e.g. the tail of what a
        streaming caller sent before); they are scored with the series, so its
        first points are not warm-up, and left out of the result.
        """
        raw, smoothed, ranking, offset, _ = self._score_parts(values, stride, causal, context)
        checks = self.stream_state(causal)  # the same checks as a new stream's
        return self._decide(raw, smoothed, ranking, checks).pick(slice(offset, None))

    def _score_parts(
        self,
        values: np.ndarray,
        stride: int | None,
        causal: bool,
        context: np.ndarray | None,
        taken: Taken | None = None,
    ) -> tuple[SeriesScores, SeriesScores, np.ndarray, int, Taken | None]:
        """Unsmoothed and smoothed results of ``context`` + ``values``, the ranking score,
        len(context), and with ``taken`` (a stream's values taken before ``values``) the
        values taken after them (else None)."""
        offset = 0
        if context is not None and len(context):
            offset = len(context)
            values = np.concatenate([np.asarray(context, dtype=np.float64), values])
        if taken is not None:  # the context's first point: the stream saw it that far back
            taken = replace(taken, at=taken.at - offset)
        normalized = self.normalize(values)
        if causal:
            raw = score_last_points(self.engine, normalized)
        else:
            raw = score_series(self.engine, normalized, stride or self.config.score_stride)
        smoothed = smooth(raw, self.config.smoothing, self.window, causal)
        ranking = ranking_score(raw, normalized, self.levels, self.config, causal, taken)
        after = None if taken is None else self.levels.learn(normalized, taken)
        return raw, smoothed, ranking, offset, after

    def context_points(self, causal: bool = False) -> int:
        """How many points before a chunk give its first points the scores and flags
        they would have in one long series: T - 1 for the window ending at the first,
        and the reach of the ranking's widest average (2 x the smoothing width, centred,
        or trailing when ``causal``): 2T - 1, or 3T - 2 causally, by default."""
        return self.window - 1 + ranking_reach(self.config.smoothing, causal)

    def stream_state(self, causal: bool = False) -> StreamState:
        """The alarm state a new stream of this model starts from (``score_stream``)."""
        return self.streams[STREAM_CAUSAL if causal else STREAM_SERIES]

    def score_stream(
        self, values: np.ndarray, state: StreamState, context: np.ndarray | None = None
    ) -> tuple[Scored, StreamState]:
        """Score the next chunk ``values`` (n, D) of a stream, its flags decided in order by
        the stream's adaptive threshold (``model/stream.py``), and return the stream's new
        state, to pass with the next chunk (scored the way ``state`` says: causally or as a
        series). ``context``: the points before ``values`` (as in ``score``); pass at
        least ``context_points`` of them after the first chunk, so that the chunk's first
        points are scored, and flagged, as in one long series: the flags need the ranking
        score, whose widest average reaches that far back. Chunks must follow each other
        without overlap: every point given outside ``context`` advances the state once.
        The state also keeps the values that variables held at one value in training have
        taken (``StreamState.taken``), so that the ranking score's learned levels
        (``model/levels.py``) learn across chunks as in one series."""
        raw, smoothed, ranking, offset, taken = self._score_parts(
            values, None, state.causal, context, state.taken
        )
        keep, fitted_on = slice(offset, None), self.metadata.get("threshold_scores", UNSMOOTHED)
        raw, smoothed, ranking = raw.pick(keep), smoothed.pick(keep), ranking[keep]
        scored, after = decide_stream(raw, smoothed, state, self.baseline, fitted_on, ranking)
        return scored, replace(after, taken=taken)

    def score_windows(self, windows: np.ndarray) -> Scored:
        """Score N independent windows (N, T', D), T' >= the model's window T.

        Each window is scored as a series of its own; arrays come back as (N, T'[, D]).
        Windows of exactly T steps go through the model in one pass, and their flags are
        the alarm score's alone: their ranking score, its averages cut at the window's
        edges, is not on the scale of the validation's, so it confirms nothing.
        """
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 3 or windows.shape[1] < self.window:
            raise DataError(f"windows must have shape (N, T >= {self.window}, {self.n_features})")
        if windows.shape[1] > self.window:
            return Scored.stack([self.score(window) for window in windows])
        x = torch.from_numpy(self.normalize(windows.reshape(-1, windows.shape[-1])))
        x = x.view(windows.shape[0], self.window, -1)  # (N, T, D)
        log_prob, kl = score_window_batch(self.engine, x)  # (N, T, D), (N,)
        kl_steps = np.repeat(kl[:, None], self.window, axis=1)  # (N, T)
        warm_up = np.broadcast_to(np.arange(self.window) < self.window - 1, kl_steps.shape)
        raw = SeriesScores(
            log_prob, kl_steps, step_scores(log_prob, kl_steps, self.window), warm_up
        )
        smoothed = smooth(raw, self.config.smoothing, self.window, False, axis=1)
        ranking = ranking_score(raw, x.numpy(), self.levels, self.config, False)
        return self._decide(raw, smoothed, ranking, None)  # no confirmation (above)

    def events(self, scored: Scored) -> list[Event]:
        """The anomalies of one scored series or window as events: runs of flagged steps,
        merged across gaps of up to half a window (T // 2 steps), each with its variables
        at fault."""
        return self.window_events(scored.pick(np.newaxis))[0]

    def window_events(self, scored: Scored) -> list[list[Event]]:
        """``events`` of every window of a scored batch (arrays (N, T[, D]))."""
        return batch_events(
            scored.is_anomaly, scored.alarm_score, scored.log_prob, self.baseline, self.window // 2
        )

    def validation_loss(self, values: np.ndarray) -> float:
        """Mean negative ELBO per window of ``values`` in original units (nats).

        Includes the normalization's Jacobian, so models with different
        normalizations compare on the same data: lower is better.
        """
        series = torch.from_numpy(self.normalize(values))
        loss = validation_loss(self.net, make_windows(series, self.window, 1))
        return loss + self.normalizer.log_jacobian(self.window)

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def _decode_samples(
        self, z: torch.Tensor, generator: torch.Generator, noise: bool
    ) -> np.ndarray:
        mean, std = self.net.decode(z, self.window)  # (n, T, D) each
        x = mean + std * torch.randn(mean.shape, generator=generator) if noise else mean
        return self.normalizer.inverse_transform(x.numpy())

    def sample(self, n: int, seed: int = 0, noise: bool = True) -> np.ndarray:
        """n synthetic windows from the prior z ~ N(0, I): (n, T, D) in original units."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        return self._decode_samples(z, generator, noise)

    def sample_posterior(
        self, window: np.ndarray, n: int, seed: int = 0, noise: bool = True
    ) -> np.ndarray:
        """n windows from q(z|window): what normal looks like around ``window`` (T, D)."""
        x = torch.from_numpy(self.normalize(window)).unsqueeze(0)  # (1, T', D)
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            mu, logvar = self.net.encode(x)  # (1, Z)
        eps = torch.randn(n, self.config.latent_dim, generator=generator)
        return self._decode_samples(self.net.reparameterize(mu, logvar, eps), generator, noise)

    # ------------------------------------------------------------------ artifact
    def header(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "feature_names": self.feature_names,
            "normalizer": self.normalizer.to_dict(),
            "threshold": self.threshold.to_dict(),
            "streams": {mode: state.to_dict() for mode, state in self.streams.items()},
            "baseline": self.baseline.tolist(),
            "levels": self.levels.to_dict(),
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> Path:
        return artifact.write_artifact(path, self.net.state_dict(), self.header())

    @classmethod
    def load(cls, path: str | Path, engine: str = DEFAULT_ENGINE) -> Detector:
        """A saved detector; ``engine`` scores it (``torch`` builds nothing, e.g. to read
        its header)."""
        tensors, header = artifact.read_artifact(path)
        try:
            config = ModelConfig.from_dict(header["config"])
            metadata = dict(header["metadata"])
            # older files do not say what their threshold was fitted on: inferred
            metadata["threshold_scores"] = threshold_scores(header["config"], metadata)
            names = list(header["feature_names"])
            streams = {k: StreamState.from_dict(v) for k, v in header.get("streams", {}).items()}
            levels = header.get("levels")  # absent before the level floor: none
            levels = None if levels is None else LevelFloor.from_dict(levels, len(names))
            net = LSTMVAE(len(names), config)
            net.load_state_dict(tensors, strict=True)
            return cls(
                net,
                config,
                names,
                Normalizer.from_dict(header["normalizer"]),
                Threshold.from_dict(header["threshold"]),
                np.asarray(header["baseline"], dtype=np.float64),
                metadata,
                make_engine(net.eval(), scoring_noise(config), engine),
                streams,
                levels,
            )
        except (KeyError, TypeError, ValueError, RuntimeError, DataError) as exc:
            raise ArtifactError(f"{path} is incompatible with this version: {exc}") from exc
