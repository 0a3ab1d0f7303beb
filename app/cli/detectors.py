"""``lvad detectors check|run``: try a detectors file before deploying it (docs/pull.md).

``run`` scores with the named models of the store (``LVAD_STORE``), read-only: it works
beside a service that has the store open, and never trains (the service does).
"""

from __future__ import annotations

import argparse
import asyncio

from prometheus_client import CollectorRegistry

from app.ops.metrics import ServiceMetrics
from app.pull.cli import add_parser
from app.pull.host import ModelHost
from app.pull.service_host import ServiceHost
from app.registry.registry import Registry
from app.scoring.backends import InProcess
from app.scoring.models import LoadedModels
from app.scoring.pipeline import ScoringPipeline
from app.settings import Settings


def add_detectors_parser(subparsers) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
    return add_parser(subparsers, host_factory=store_host)


def store_host(args: argparse.Namespace) -> ModelHost:
    """The store's models, read-only, scored in this process."""
    settings = Settings()
    registry = Registry.read_only(settings.store)
    metrics = ServiceMetrics(CollectorRegistry())
    models = LoadedModels(registry, metrics, settings.max_loaded_models)
    backend = InProcess(metrics.observe_call)
    pipeline = ScoringPipeline(models, backend, metrics, settings)
    return ServiceHost(registry, models, backend, asyncio.run, pipeline.observe, None)
