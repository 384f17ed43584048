"""Ingest: write the dataset once to `<work>/data/<dataset>/`, atomically and idempotently.

Sources: `fashion_mnist` (tensorflow-datasets; downloads on first run), `idx` (the four
official `*-ubyte.gz` files in a folder, for air-gapped machines), `synthetic` (garments drawn
by jobs.ingest.garments, deterministic; for offline runs and tests). Re-running with the same
source and settings finds the manifest and does nothing; a synthetic dataset drawn by another
version of the generator is drawn again. Training reads only what this step wrote.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from jobs.core.cli import emit, fraction, parser, positive_int
from jobs.core.paths import Work
from jobs.ingest import data, garments

log = logging.getLogger("jobs.ingest")


def open_fraction(text: str) -> float:
    value = fraction(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"must be above 0 and below 1: {text}")
    return value


def source_settings(dataset: str, work: Work, idx_dir: Path | None, synthetic: dict) -> dict:
    """What identifies the data a source produces: equal settings mean equal data. `synthetic`:
    train_size, test_size and seed of the generated images."""
    if dataset == "synthetic":
        return {"name": "synthetic", "generator": garments.SYNTHETIC_VERSION, **synthetic}
    if dataset == "idx":
        folder = idx_dir or work.idx
        return {"name": "idx", "folder": str(folder.resolve())}
    return {"name": "fashion_mnist", "via": "tensorflow-datasets"}


def produce(settings: dict, work: Work) -> data.Dataset:
    if settings["name"] == "synthetic":
        return data.synthetic(settings["train_size"], settings["test_size"], settings["seed"])
    if settings["name"] == "idx":
        return data.from_idx(Path(settings["folder"]))
    return data.from_tfds(work.tfds)


def ingest(work: Work, settings: dict, dataset: str, validation: dict | None = None) -> tuple[dict, bool]:
    """Returns the stored manifest and whether this call wrote it."""
    validation = {**data.DEFAULT_VALIDATION, **(validation or {})}
    target = work.dataset(dataset)
    existing = data.read_manifest(target)
    if (
        existing is not None
        and existing.get("source") == settings
        and existing.get("format") == data.FORMAT_VERSION
        and existing.get("validation") == validation
    ):
        data.load(target)  # a no-op only if what is there is whole
        log.info("%s is already ingested at %s; nothing to do", dataset, target)
        return existing, False
    if existing is not None:
        log.info("%s holds other data or splits (%s); replacing it", target, existing.get("source"))
    log.info("ingesting %s into %s (validation split: %s)", settings, target, validation)
    manifest = data.write(produce(settings, work), target, settings, validation)
    return manifest, True


def build_parser() -> argparse.ArgumentParser:
    """The step's flags: their defaults are the pipeline's (jobs.steps reads them)."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, required=True, help="the shared volume")
    p.add_argument("--dataset", choices=data.SOURCES, default="fashion_mnist", help="where the images come from")
    idx_help = "with --dataset idx: the folder holding the *-ubyte.gz files (default: <work-dir>/idx)"
    p.add_argument("--idx-dir", type=Path, help=idx_help)
    p.add_argument("--train-size", type=positive_int, default=12_000, help="with --dataset synthetic")
    p.add_argument("--test-size", type=positive_int, default=2_000, help="with --dataset synthetic")
    p.add_argument("--seed", type=int, default=0, help="with --dataset synthetic")
    p.add_argument(
        "--validation-fraction",
        type=open_fraction,
        default=data.DEFAULT_VALIDATION["fraction"],
        help="share of the training images held out to compare candidates on",
    )
    p.add_argument(
        "--split-seed", type=int, default=data.DEFAULT_VALIDATION["seed"], help="seed of the validation draw"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    validation = {"fraction": args.validation_fraction, "seed": args.split_seed}
    work = Work(args.work_dir)
    synthetic = {"train_size": args.train_size, "test_size": args.test_size, "seed": args.seed}
    manifest, wrote = ingest(
        work, source_settings(args.dataset, work, args.idx_dir, synthetic), args.dataset, validation
    )
    emit(
        train_examples=manifest["counts"]["train"],  # of which the validation split holds:
        validation_examples=manifest["splits"]["validation"]["examples"],
        test_examples=manifest["counts"]["test"],
        written=int(wrote),
    )
    return 0
