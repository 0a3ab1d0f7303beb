"""The ``lvad`` command line: demo data, train, score, sample, inspect, evaluate, serve,
and for a scale-out: a training worker, and a store migrated into PostgreSQL."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from app.ops.malloc import reuse_freed_buffers
from model.config import ModelConfig
from model.errors import LvadError


def build_config(args: argparse.Namespace) -> ModelConfig:
    """The defaults with ``--set NAME=VALUE`` and ``--window/--epochs/--seed`` applied."""
    overrides: dict[str, object] = {}
    for pair in args.set or []:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise LvadError(f"--set expects NAME=VALUE; got {pair!r}")
        overrides[name] = raw
    for name in ("window", "epochs", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = str(value)
    return ModelConfig.with_overrides(overrides, text=True)


def cmd_demo(args: argparse.Namespace) -> None:
    from model.evaluation.demo import write_demo

    paths = write_demo(args.out, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from app.cli.output import EpochPrinter
    from model.data import load_table
    from model.detector import Detector

    config = build_config(args)
    table = load_table(args.data, ignore_columns=args.ignore or ())
    print(
        f"training on {args.data}: {len(table.values)} points x {len(table.feature_names)} "
        f"variables, window {config.window}"
    )
    with EpochPrinter(config.epochs) as printer:
        detector = Detector.fit(table, config, on_epoch=printer)
    path = detector.save(args.out)
    meta = detector.metadata
    print(
        f"saved {path}: {meta['epochs_run']} epochs (best {meta['best_epoch']}), "
        f"validation loss {meta['validation_loss']:.2f}, threshold "
        f"{detector.threshold.value:.3f} ({detector.threshold.method}), "
        f"{meta['training_seconds']:.1f} s"
    )


def cmd_score(args: argparse.Namespace) -> None:
    reuse_freed_buffers()  # large model calls reuse their buffers' pages (app/ops/malloc.py)
    from app.cli.output import print_score_summary, scores_frame
    from model.data import prepare_frame, read_frame
    from model.detector import Detector

    detector = Detector.load(args.model)
    raw = read_frame(args.data)
    labels = None
    if args.label_column:
        if args.label_column not in raw.columns:
            raise LvadError(f"--label-column: no column {args.label_column!r} in {args.data}")
        labels = raw[args.label_column].to_numpy()
    ignore = list(args.ignore or ()) + ([args.label_column] if args.label_column else [])
    table = prepare_frame(raw, feature_names=detector.feature_names, ignore_columns=ignore)
    scored = detector.score(table.values, stride=args.stride, causal=args.causal)
    frame = scores_frame(detector, table, scored, with_contributions=args.contributions)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {len(frame)} rows to {args.out}")
    print_score_summary(detector, table, scored, labels)


def cmd_sample(args: argparse.Namespace) -> None:
    from model.data import load_table, samples_frame
    from model.detector import Detector

    detector = Detector.load(args.model)
    if args.around is not None:
        table = load_table(
            args.around, feature_names=detector.feature_names, ignore_columns=args.ignore or ()
        )
        start = args.at if args.at is not None else len(table.values) - detector.window
        window = table.values[start : start + detector.window]
        samples = detector.sample_posterior(window, args.n, seed=args.seed, noise=not args.mean)
    else:
        samples = detector.sample(args.n, seed=args.seed, noise=not args.mean)
    n, steps, _ = samples.shape
    frame = samples_frame(samples, detector.feature_names)
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"wrote {n} windows of {steps} steps to {args.out}")
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")


def cmd_info(args: argparse.Namespace) -> None:
    from model.detector import Detector

    detector = Detector.load(args.model)
    header = detector.header()
    header["metadata"] = {k: v for k, v in header["metadata"].items() if k != "history"}
    header.pop("baseline")
    print(json.dumps(header, indent=2))


def cmd_evaluate(args: argparse.Namespace) -> None:
    reuse_freed_buffers()
    config = build_config(args)
    chunk = {"chunk": args.chunk} if args.chunk else {}  # the default: model.evaluate.CHUNK
    if args.directory is None and args.nab is None and args.smd is None:
        raise LvadError("give a directory of TSB-AD-format files, --nab NAB_DIR or --smd SMD_DIR")
    if args.directory is not None:
        from model.evaluation.evaluate import run_evaluation

        run_evaluation(args.directory, args.out, config, args.files, **chunk)
    if args.nab is not None:
        from model.evaluation.nab import evaluate_nab

        evaluate_nab(args.nab, args.out, config, **chunk)
    if args.smd is not None:
        from model.evaluation.smd import evaluate_smd

        evaluate_smd(args.smd, args.out, config, **chunk)


def cmd_serve(args: argparse.Namespace) -> None:
    from app.ops.server import serve

    serve(host=args.host, port=args.port, detectors=args.detectors)


def cmd_worker(args: argparse.Namespace) -> None:
    from app.ops.server import load_settings
    from app.registry.worker import run_worker

    settings = load_settings()
    if not settings.scale_out:
        raise LvadError(
            "lvad worker needs LVAD_REGISTRY_URL and LVAD_BROKER_URL (docs/deployment.md, "
            '"Scaling")'
        )
    run_worker(settings, args.concurrency)


def cmd_registry_migrate(args: argparse.Namespace) -> None:
    from app.registry.migrate import migrate_store

    done = migrate_store(Path(args.source), args.target)
    print(
        f"migrated {done.models} model(s), {done.versions} version(s), {done.jobs} job(s) "
        f"and {done.files} file(s) from {args.source}"
    )


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", type=int, help="window length T (time steps)")
    parser.add_argument("--epochs", type=int, help="maximum training epochs")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="any model parameter (repeatable), e.g. --set latent_dim=16",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write the built-in demo data set as CSV")
    p.add_argument("--out", default="demo-data", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model on normal data (CSV or Parquet)")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--ignore", action="append", help="column to ignore (repeatable)")
    add_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score a series with a trained model")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", help="CSV of per-point scores to write")
    p.add_argument("--stride", type=int, help="step between scoring windows")
    p.add_argument(
        "--causal",
        action="store_true",
        help="score each point with the window ending there (streaming semantics)",
    )
    p.add_argument("--label-column", help="a 0/1 column to ignore as input and evaluate against")
    p.add_argument("--ignore", action="append", help="column to ignore (repeatable)")
    p.add_argument(
        "--contributions", action="store_true", help="also write each variable's share of the score"
    )
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sample", help="draw synthetic windows from the trained model")
    p.add_argument("model")
    p.add_argument("-n", type=int, default=1, help="number of windows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mean", action="store_true", help="decoder means instead of noisy draws")
    p.add_argument("--around", help="data file: sample the posterior around one of its windows")
    p.add_argument("--at", type=int, help="start row of that window (default: the last window)")
    p.add_argument("--ignore", action="append", help="column of --around to ignore")
    p.add_argument("--out", help="CSV to write (default: standard output)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="describe a model file")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("evaluate", help="benchmark on TSB-AD-format files and/or NAB")
    p.add_argument("directory", nargs="?", help="directory of TSB-AD-format CSV files")
    p.add_argument("--out", required=True, help="directory for per-file score CSVs")
    p.add_argument("--nab", help="NAB directory (data/, labels/): causal scoring, 15%% training")
    p.add_argument("--smd", help="SMD directory (train/, test/, labels/, interpretation_label/)")
    p.add_argument("--files", help="only files whose name contains this text")
    p.add_argument(
        "--chunk",
        type=int,
        help="rows per request when the rows after training are scored as a stream, "
        "which decides the flags (default 256)",
    )
    add_config_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--detectors", help="a detectors file: pull mode (docs/pull.md)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run training jobs from the broker (scale-out)")
    p.add_argument(
        "--concurrency", type=int, help="jobs at a time (default LVAD_WORKER_CONCURRENCY)"
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("registry", help="the model registry (scale-out)")
    registry = p.add_subparsers(dest="registry_command", required=True)
    p = registry.add_parser("migrate", help="copy an embedded store into PostgreSQL")
    p.add_argument("--from", dest="source", required=True, help="the store (LVAD_STORE)")
    p.add_argument("--to", dest="target", required=True, help="postgresql+psycopg://... URL")
    p.set_defaults(func=cmd_registry_migrate)

    from app.cli.detectors import add_detectors_parser

    add_detectors_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LvadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
