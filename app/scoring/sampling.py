"""Sampling from a named model: windows from the prior, or around a given window."""

from __future__ import annotations

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.errors import LimitError
from app.http.schemas import SampleRequest
from app.scoring.models import LoadedModels, ServedModel
from model.data import order_columns
from model.errors import DataError


class Sampler:
    def __init__(self, models: LoadedModels, max_samples: int) -> None:
        self.models = models
        self.max_samples = max_samples

    async def prior(
        self, name: str, n: int, seed: int, noise: bool
    ) -> tuple[ServedModel, np.ndarray]:
        """n windows (n, T, D) decoded from z ~ N(0, I), in original units."""
        self._check(n)
        served = await run_in_threadpool(self.models.get, name)
        samples = await run_in_threadpool(served.detector.sample, n, seed=seed, noise=noise)
        return served, samples

    async def posterior(self, name: str, request: SampleRequest) -> tuple[ServedModel, np.ndarray]:
        """n windows (n, T, D) drawn from q(z|window) around the request's window."""
        self._check(request.n)
        served = await run_in_threadpool(self.models.get, name)
        detector = served.detector
        widths = {len(row) for row in request.window}
        if len(widths) != 1:
            raise DataError(f"window rows are ragged: widths {sorted(widths)}", field="window")
        if len(request.window) < detector.window:
            raise DataError(
                f"the window has {len(request.window)} steps; the model needs {detector.window}",
                field="window",
            )
        window = order_columns(
            np.asarray(request.window, dtype=np.float64),
            request.variables,
            detector.feature_names,
            "window",
        )
        samples = await run_in_threadpool(
            detector.sample_posterior,
            window[-detector.window :],
            request.n,
            seed=request.seed,
            noise=request.noise,
        )
        return served, samples

    def _check(self, n: int) -> None:
        if n > self.max_samples:
            raise LimitError(f"n={n}; the limit is {self.max_samples}", field="n")
