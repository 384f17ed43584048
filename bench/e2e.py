"""End-to-end section: `python -m jobs.local --dataset synthetic` (what `make local
DATASET=synthetic` runs) in a fresh work dir: its wall time, each stage's, each candidate's
test accuracy, and the plain Keras baseline's at the same steps (bench.baseline). bench.accuracy
runs it on real data the same way."""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import baseline
from bench.processes import child_env, run_group
from bench.results import Figures
from bench.sizes import Sizes
from jobs import steps
from jobs.core.files import read_json
from jobs.core.paths import Work
from jobs.train import models

log = logging.getLogger("bench.e2e")


def run_local(
    work: Work,
    run_id: str,
    dataset: str,
    extra: Sequence[str],
    python: str,
    timeout: float,
    prepare: Callable[[Work], None] | None = None,
) -> dict:
    """`python -m jobs.local` in its own work dir; returns its wall time, stages and accuracies."""
    if prepare is not None:
        prepare(work)
    argv = [python, "-m", "jobs.local", "--work-dir", str(work.root), "--dataset", dataset, "--run-id", run_id, *extra]
    log.info("end to end: %s", shlex.join(argv))
    started = time.monotonic()
    run_group([(argv, child_env())], work.root / "bench-logs", run_id, timeout)
    wall = time.monotonic() - started
    timings = read_json(work.run(run_id) / "timings.json")
    accuracy = {}
    for name in models.NAMES:
        metrics = work.candidate(run_id, name).eval / "metrics.json"
        if metrics.exists():
            accuracy[name] = read_json(metrics)["accuracy"]
    return {
        "wall": wall,
        "runner_wall": timings["wall_seconds"],
        "stages": timings["stages"],
        "accuracy": accuracy,
        "promoted": read_json(work.run(run_id) / "promotion.json").get("model"),
    }


def run(figures: Figures, sizes: Sizes, work_root: Path, python: str) -> None:
    for rep in range(sizes.e2e_repeats):
        work = Work(work_root / f"e2e-{rep}")
        result = run_local(work, f"bench-e2e-{rep}", "synthetic", sizes.e2e, python, sizes.timeout * 2)
        add_result(figures, result, quick=bool(sizes.e2e))
        baseline.compare(figures, work, f"bench-e2e-{rep}", "synthetic", result, "e2e.accuracy", "synthetic")


def add_result(figures: Figures, result: dict, quick: bool) -> None:
    settings = "quick settings" if quick else "default settings"
    label = f"end to end: make local DATASET=synthetic, {settings}"
    figures.add("e2e.wall", label, "s", result["wall"], target="" if quick else "<= 180")
    for stage, seconds in ordered_stages(result["stages"]):
        figures.add(f"e2e.stage.{stage}", f"end to end stage: {stage}", "s", seconds)
    outside = result["wall"] - sum(result["stages"].values())
    label = "end to end: outside the stages (runner start-up, tracking set-up, summary)"
    figures.add("e2e.outside", label, "s", outside)
    for model, accuracy in result["accuracy"].items():
        figures.add(f"e2e.accuracy.{model}", f"synthetic test accuracy: {model}", "fraction", accuracy)


def ordered_stages(stages: dict[str, float]) -> list[tuple[str, float]]:
    """The runner's stage timings in pipeline order (the JSON file has them sorted by name)."""
    rank = {step.name: i for i, step in enumerate(steps.STEPS)}
    model_rank = {name: i for i, name in enumerate(models.NAMES)}  # the runner's default order

    def key(item):
        step, _, model = item[0].partition(":")
        return rank.get(step, len(rank)), model_rank.get(model, len(model_rank)), item[0]

    return sorted(stages.items(), key=key)
