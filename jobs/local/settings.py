"""The local runner's settings: its flags (`python -m jobs.local --help`, the defaults that
`make local` leaves in force for an empty knob), checked and turned into a `Settings`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from jobs import steps
from jobs.core import cpus, files
from jobs.core.cli import (
    csv_list,
    fraction,
    non_negative_int,
    parser,
    path_arg,
    plain_name,
    positive_float,
    positive_int,
)
from jobs.core.paths import Work
from jobs.ingest import data
from jobs.release import promote
from jobs.train import models

# One training worker's memory: 0.75-0.9 GiB resident measured here (TF 2.20, tf-keras, two
# MWMS workers, synthetic and Fashion-MNIST sizes), rounded up.
WORKER_MEMORY_MIB = 1024
# The steps that take extra flags (--ingest-args, ...), e.g. the canary's bounds.
EXTRA_ARGS = ("ingest", "train", "promote", "canary")


@dataclasses.dataclass
class Settings:
    work: Work
    run_id: str
    dataset: str
    epochs: int
    workers: int
    models: list[str]
    min_accuracy: float
    max_restarts: int
    python: str
    extra: dict[str, list[str]]
    rollout: str = "direct"
    canary_seconds: float = 20.0
    pin: bool = True  # each training worker on its own CPUs (jobs.cpus.worker_env)
    create_store: bool = False  # create the local MLflow store first (no MLFLOW_TRACKING_URI given)
    patience: int = 0  # epochs without a better validation accuracy before a candidate stops (0: never)


def shell_words(text: str) -> str:
    """Flags as a shell splits them (checked here, split by `settings_from`)."""
    try:
        shlex.split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def default_run_id() -> str:
    return time.strftime("local-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def build_parser() -> argparse.ArgumentParser:
    p = parser("Run the whole pipeline on this machine: the cluster's steps, with local processes.")
    # The pipeline's defaults, as the steps' own parsers own them (jobs.steps.default).
    p.add_argument("--work-dir", type=path_arg, default=Path(".work"), help="datasets, runs, models, tracking")
    p.add_argument(
        "--dataset",
        choices=data.SOURCES,
        default=steps.default("dataset"),
        help="where the images come from",
    )
    p.add_argument(
        "--epochs", type=positive_int, default=int(steps.default("epochs")), help="training epochs per candidate"
    )
    p.add_argument(
        "--patience",
        type=non_negative_int,
        default=int(steps.default("patience")),
        help="epochs without a better validation accuracy before a candidate stops early (0: never)",
    )
    p.add_argument("--workers", type=positive_int, default=steps.WORKERS, help="worker processes per candidate")
    p.add_argument(
        "--models", type=csv_list(models.NAMES), default=steps.default("models"), help="comma-separated candidates"
    )
    p.add_argument(
        "--run-id",
        type=plain_name,
        default=default_run_id(),
        help="names this run's folder (the default: the time and a random suffix, so that two runs started "
        "in one second differ)",
    )
    p.add_argument("--min-accuracy", type=fraction, default=steps.MIN_ACCURACY, help="the smoke check's threshold")
    p.add_argument(
        "--max-restarts",
        type=non_negative_int,
        default=3,
        help="restarts of a training job whose worker was killed or exited 128-255",
    )
    p.add_argument(
        "--worker-memory",
        type=positive_int,
        default=WORKER_MEMORY_MIB,
        metavar="MIB",
        help="memory one training worker needs; the run refuses workers that do not fit",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin each training worker to its own share of the CPUs (Linux, at least one CPU per worker); "
        "--no-pin leaves their placement to the OS",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    p.add_argument(
        "--promote",
        choices=("gate", "force"),
        default="gate",
        help="gate: promote only a candidate better beyond noise; force: promote the best anyway",
    )
    p.add_argument(
        "--rollout",
        choices=promote.ROLLOUTS,
        default=steps.default("rollout"),
        help="direct: one model server; canary: a stable and a canary server, the new version on the "
        "canary first, then the canary step promotes or rolls it back",
    )
    p.add_argument(
        "--canary-seconds",
        type=positive_float,
        default=20.0,
        help="how long the canary step watches the canary (--rollout canary)",
    )
    for name in EXTRA_ARGS:
        p.add_argument(
            f"--{name}-args",
            type=shell_words,
            default="",
            metavar="ARGS",
            help=f"extra flags for every {name} command (python -m jobs.{name} --help)",
        )
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings from its flags: the resources and the work dir checked, the extra
    flags split, the local MLflow store chosen when no MLFLOW_TRACKING_URI is given."""
    extra = {name: shlex.split(getattr(args, f"{name}_args")) for name in EXTRA_ARGS}
    if args.promote == "force":
        extra["promote"].insert(0, "--force")

    cpus.check_resources(args.workers, args.worker_memory)
    work = Work(files.check_work_dir(args.work_dir))
    create_store = not os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if create_store:
        os.environ["MLFLOW_TRACKING_URI"] = work.mlflow_uri
    # MLflow 3.17 sends usage telemetry unless told not to; every step inherits this (set it to
    # false to send it).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return Settings(
        work=work,
        run_id=args.run_id,
        dataset=args.dataset,
        epochs=args.epochs,
        patience=args.patience,
        workers=args.workers,
        models=args.models,
        min_accuracy=args.min_accuracy,
        max_restarts=args.max_restarts,
        python=args.python,
        extra=extra,
        rollout=args.rollout,
        canary_seconds=args.canary_seconds,
        pin=args.pin,
        create_store=create_store,
    )
