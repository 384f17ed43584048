"""Ingest: write the dataset once to `<work>/data/<dataset>/`, atomically and idempotently.

Sources: `fashion_mnist` (tensorflow-datasets; downloads on first run), `idx` (the four
official `*-ubyte.gz` files in a folder, for air-gapped machines), `synthetic` (garments drawn
by jobs.garments, deterministic; for offline runs and tests). Re-running with the same source
and settings finds the manifest and does nothing; a synthetic dataset drawn by another version
of the generator is drawn again. Training reads only what this step wrote.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs import data, garments
from jobs.cli import emit, fraction, parser, positive_int, run
from jobs.paths import Work

log = logging.getLogger("jobs.ingest")


def open_fraction(text: str) -> float:
    value = fraction(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"must be above 0 and below 1: {text}")
    return value


def source_settings(args) -> dict:
    """What identifies the data a source produces: equal settings mean equal data."""
    if args.dataset == "synthetic":
        sizes = {"train_size": args.train_size, "test_size": args.test_size, "seed": args.seed}
        return {"name": "synthetic", "generator": garments.SYNTHETIC_VERSION, **sizes}
    if args.dataset == "idx":
        folder = args.idx_dir or Work(args.work_dir).idx
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


def main(argv: Sequence[str] | None = None) -> int:
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
    args = p.parse_args(argv)

    validation = {"fraction": args.validation_fraction, "seed": args.split_seed}
    manifest, wrote = ingest(Work(args.work_dir), source_settings(args), args.dataset, validation)
    emit(
        train_examples=manifest["counts"]["train"],  # of which the validation split holds:
        validation_examples=manifest["splits"]["validation"]["examples"],
        test_examples=manifest["counts"]["test"],
        written=int(wrote),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
