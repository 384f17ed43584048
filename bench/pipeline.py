"""Input section: images/s that `jobs.ingest.data.training_pipeline` delivers alone, in this process.
Beside training it is compared with what training consumed (bench.training); alone it is
measured by itself."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.results import Figures
from bench.sizes import Sizes
from jobs.ingest import data

WARM_UP_BATCHES = 20  # fill the cache, the shuffle buffer and the prefetch


def meter(train_size: int, batches: int, batch: int = 64) -> Callable[[], float]:
    """A function measuring images/s of jobs.data.training_pipeline alone."""
    split = data.synthetic(train_size, 10, seed=0)["train"]

    def measure() -> float:
        iterator = iter(data.training_pipeline(split, batch))
        for _ in range(WARM_UP_BATCHES):
            next(iterator)
        started = time.perf_counter()
        for _ in range(batches):
            images, _labels = next(iterator)
        images.numpy()
        return batches * batch / (time.perf_counter() - started)

    return measure


def run(figures: Figures, sizes: Sizes, measure: Callable[[], float]) -> None:
    """The pipeline alone, without a training figure to compare with."""
    for _ in range(sizes.repeats):
        figures.add("input.pipeline", "input pipeline alone (batch 64)", "images/s", measure())
