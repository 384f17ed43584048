"""Training section: images/s of the default CNN trained by `jobs.train` on one process vs
WORKERS MultiWorkerMirroredStrategy processes on the same cores: as jobs.train and jobs.local
run it now (its custom loop, each worker pinned to its own CPUs), the same loop unpinned, and
the previous implementation (Keras fit, unpinned), in the same repeats; then the step split
measured inside WORKERS worker processes (`python -m bench.worker`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bench.processes import run_group, worker_group
from bench.results import Figures
from bench.sizes import Sizes
from jobs.core.cli import JobError
from jobs.core.files import read_json
from jobs.core.paths import Work
from jobs.ingest import data

log = logging.getLogger("bench.training")

BATCH = 64  # per worker, as jobs.train
MODEL = "cnn"
# What each repeat trains, by name: (jobs.train's --loop, workers pinned). "custom" is how
# training runs now; "unpinned" separates the loop's share of the change from the pinning's;
# "fit" is the previous implementation. One process is never pinned, so "unpinned" has no
# single run of its own: its efficiency is against "custom"'s.
VARIANTS = {"custom": ("custom", True), "unpinned": ("custom", False), "fit": ("fit", False)}


def ingest_synthetic(work: Work, train_size: int) -> None:
    source = {"name": "synthetic", "train_size": train_size, "test_size": 200, "seed": 0}
    data.write(data.synthetic(train_size, 200, seed=0), work.dataset("synthetic"), source)


def train_throughput(history: dict, skip: int = 1) -> float:
    """images/s over the epochs after the first `skip` (compile and warm-up)."""
    from jobs.train.progress import images_per_second

    epochs = [e for e in history["epochs"] if e["epoch"] >= skip]
    if not epochs:
        raise JobError("training history has no epoch after the warm-up epoch")
    return images_per_second(epochs)


def train_once(work: Work, run_id: str, workers: int, steps: int, sizes: Sizes, python: str, variant: str) -> float:
    """One `jobs.train` job of the cnn, launched like jobs.local launches it; its throughput."""
    loop, pin = VARIANTS[variant]
    argv = [python, "-m", "jobs.train", "--work-dir", str(work.root), "--run-id", run_id, "--dataset", "synthetic"]
    argv += ["--model", MODEL, "--epochs", str(sizes.epochs), "--steps-per-epoch", str(steps), "--loop", loop]
    run_group(worker_group(argv, workers, pin), work.root / "logs", run_id, sizes.timeout)
    return train_throughput(read_json(work.candidate(run_id, MODEL).history))


def order(rep: int) -> list[tuple[str, str]]:
    """The (variant, kind) trainings of repeat `rep`: every variant multi, and single where it
    has its own, in reverse order every other repeat, so a drift in load favours none."""
    runs = [(name, kind) for name in VARIANTS for kind in ("single", "multi") if kind == "multi" or name != "unpinned"]
    return runs if rep % 2 == 0 else runs[::-1]


def run(figures: Figures, sizes: Sizes, work: Work, workers: int, python: str, pipeline: Callable[[], float] | None):
    """Each repeat trains single and multi with each loop back to back (alternating the
    order), then measures the input pipeline against the single rate."""
    ingest_synthetic(work, sizes.train_size)
    steps = {"single": max(1, sizes.epoch_images // BATCH), "multi": max(1, sizes.epoch_images // (BATCH * workers))}
    for rep in range(sizes.repeats):
        measured: dict[str, dict[str, float]] = {name: {} for name in VARIANTS}
        for name, kind in order(rep):
            n = 1 if kind == "single" else workers
            log.info("training: %s, %s (%d process(es)), repeat %d/%d", name, kind, n, rep + 1, sizes.repeats)
            measured[name][kind] = train_once(work, f"{name}-{kind}-{rep}", n, steps[kind], sizes, python, name)
        add_training(figures, measured, workers)
        if pipeline is not None:
            add_headroom(figures, pipeline(), measured["custom"]["single"])
    if workers > 1:
        step_split(figures, sizes, work, workers, python)


def add_training(figures: Figures, measured: dict[str, dict[str, float]], workers: int) -> None:
    custom, unpinned, fit = measured["custom"], measured["unpinned"], measured["fit"]
    figures.add("train.single", "training, 1 process on all cores", "images/s", custom["single"])
    label = f"training, {workers} MWMS workers on the same cores, each pinned to its own"
    figures.add("train.multi", label, "images/s", custom["multi"])
    label = "multi-worker scaling efficiency (multi ÷ single)"
    figures.add("train.efficiency", label, "ratio", custom["multi"] / custom["single"], target=">= 0.8")
    label = f"the same loop, workers not pinned: training, {workers} MWMS workers"
    figures.add("train.unpinned.multi", label, "images/s", unpinned["multi"])
    label = "the same loop, workers not pinned: scaling efficiency"
    figures.add("train.unpinned.efficiency", label, "ratio", unpinned["multi"] / custom["single"])
    previous = "previous implementation (Keras fit, not pinned)"
    figures.add("train.fit.single", f"{previous}: training, 1 process", "images/s", fit["single"])
    figures.add("train.fit.multi", f"{previous}: training, {workers} MWMS workers", "images/s", fit["multi"])
    figures.add("train.fit.efficiency", f"{previous}: scaling efficiency", "ratio", fit["multi"] / fit["single"])


def add_headroom(figures: Figures, delivered: float, consumed: float) -> None:
    figures.add("input.pipeline", "input pipeline alone (batch 64)", "images/s", delivered)
    label = "input pipeline ÷ training consumption (1 process)"
    figures.add("input.headroom", label, "ratio", delivered / consumed, target=">= 5")


def step_split(figures: Figures, sizes: Sizes, work: Work, workers: int, python: str) -> None:
    """Runs `python -m bench.worker` in `workers` MWMS processes; reads the chief's timings."""
    out = work.root / "split.json"
    argv = [python, "-m", "bench.worker", "--out", str(out), "--steps", str(sizes.split_steps)]
    argv += ["--fit-steps", str(sizes.split_fit_steps), "--repeats", str(sizes.repeats)]
    log.info("training: step split in %d workers", workers)
    run_group(worker_group(argv, workers), work.root / "logs", "split", sizes.timeout)
    add_split(figures, read_json(out))


def add_split(figures: Figures, result: dict) -> None:
    labels = {
        "compute": f"step split: forward+backward, {result['batch_per_worker']} images per worker",
        "allreduce": f"step split: gradient all-reduce ({result['gradient_bytes'] / 2**20:.2f} MiB)",
        "allreduce_bf16": f"step split: the same all-reduce in bfloat16 ({result['gradient_bytes'] / 2**21:.2f} MiB)",
        "custom": "step split: custom-loop step (compute + all-reduce + Adam)",
        "loop": (
            f"step split: jobs.train's custom loop, steps_per_execution={result['steps_per_execution']} "
            "(metrics per epoch)"
        ),
        "loop_bf16": "step split: the same loop, gradients sent as bfloat16, added in float32",
        "fit": "step split: Keras fit step, steps_per_execution=1",
        "fit_spe": (
            f"step split: Keras fit step, steps_per_execution={result['steps_per_execution']} (jobs.train's default)"
        ),
    }
    for name, label in labels.items():
        for value in result["ms"][name]:
            figures.add(f"split.{name}", label, "ms/step", value)
    for custom, fit in zip(result["ms"]["custom"], result["ms"]["fit"], strict=True):
        figures.add("split.fit_overhead", "step split: Keras fit step − custom-loop step", "ms/step", fit - custom)
    for loop, fit in zip(result["ms"]["loop"], result["ms"]["fit_spe"], strict=True):
        label = f"step split: Keras fit − jobs.train's loop, steps_per_execution={result['steps_per_execution']}"
        figures.add("split.loop_saving", label, "ms/step", fit - loop)
