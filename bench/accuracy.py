"""Accuracy section: each candidate's test accuracy on real Fashion-MNIST (or whatever real
images are in the work dir's idx/), when it is already on this machine (nothing is downloaded):
`jobs.local` on it, as bench.e2e runs it, and the plain Keras baseline beside it (bench.baseline)."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from bench import baseline
from bench.e2e import run_local
from bench.results import Figures
from bench.sizes import Sizes
from jobs.core.paths import Work
from jobs.ingest import data

REAL_DATASETS = tuple(source for source in data.SOURCES if source != "synthetic")
LABEL = "real Fashion-MNIST test accuracy, best candidate"
TARGET = ">= 0.91"

Found = tuple[str, Callable[[Work], None], list[str]]


def real_data(work: Work) -> Found | None:
    """Where real Fashion-MNIST is on this machine, without downloading: an ingested copy
    under <work>/data, a tensorflow-datasets cache under <work>/tfds, or the four official
    files under <work>/idx. Returns (dataset, prepare a bench work dir, extra jobs.local flags)."""
    for name in REAL_DATASETS:
        found = _ingested(work, name)
        if found is not None:
            return found
    if (work.tfds / "fashion_mnist").is_dir():
        return "fashion_mnist", lambda target: link_tree(work.tfds, target.tfds), []
    if all((work.idx / name).exists() for name in data.IDX_FILES.values()):
        return "idx", lambda target: None, [f"--ingest-args=--idx-dir {shlex.quote(str(work.idx.resolve()))}"]
    return None


def _ingested(work: Work, name: str) -> Found | None:
    folder = work.dataset(name)
    manifest = data.read_manifest(folder) if (folder / "manifest.json").exists() else None
    if not manifest or manifest.get("source", {}).get("name") != name:
        return None
    extra = [f"--ingest-args=--idx-dir {shlex.quote(manifest['source']['folder'])}"] if name == "idx" else []
    return name, lambda target: link_tree(folder, target.dataset(name)), extra


def link_tree(source: Path, target: Path) -> None:
    """Copies a folder by hard links where the file system allows (the data is read-only)."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


def run(figures: Figures, sizes: Sizes, data_work: Work, work_root: Path, python: str) -> None:
    found = real_data(data_work)
    if found is None:
        note = f"no Fashion-MNIST under {data_work.root} (data/fashion_mnist, tfds/ or idx/)"
        figures.text("accuracy.real", LABEL, "not available", target=TARGET, note=note)
        return
    dataset, prepare, extra = found
    flags = [*extra, *(f for f in sizes.e2e if not f.startswith("--ingest-args"))]
    work = Work(work_root / "accuracy")
    result = run_local(work, "bench-accuracy", dataset, flags, python, sizes.timeout * 6, prepare)
    for model, accuracy in result["accuracy"].items():
        figures.add(f"accuracy.{model}", f"real Fashion-MNIST test accuracy: {model}", "fraction", accuracy)
    best = max(result["accuracy"].values())
    figures.add("accuracy.best", LABEL, "fraction", best, target="" if sizes.e2e else TARGET)
    baseline.compare(figures, work, "bench-accuracy", dataset, result, "accuracy", f"real data ({dataset})")
