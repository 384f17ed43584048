"""How much work each measurement does: the full benchmark and its quick mode."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    """FULL fits `make bench` in 16 to 19 minutes on 2 cores (986 and 1,117 s measured)."""

    repeats: int = 3
    train_size: int = 12_000  # synthetic training split (Fashion-MNIST has 60,000)
    epoch_images: int = 9_600  # images per training epoch, single and multi alike
    epochs: int = 3  # the first is warm-up and is not counted
    split_steps: int = 40  # steps per timed block in the step split
    split_fit_steps: int = 60
    pipeline_batches: int = 400
    latency_requests: dict = dataclasses.field(default_factory=lambda: {1: 200, 32: 60})
    load_requests: dict = dataclasses.field(default_factory=lambda: {1: 200, 8: 400, 32: 640})
    e2e: tuple[str, ...] = ()  # extra jobs.local flags (none: the default settings)
    e2e_repeats: int = 3
    timeout: float = 600.0  # for any one child process
    together: bool = False  # run the sections at the same time (they then measure each other)


FULL = Sizes()

# Every code path once, at sizes where process start-up dominates: tests/repo/test_bench.py runs it.
QUICK = Sizes(
    repeats=1,
    e2e_repeats=1,
    train_size=640,
    epoch_images=256,
    epochs=2,
    split_steps=2,
    split_fit_steps=3,
    pipeline_batches=10,
    latency_requests={1: 5, 32: 2},
    load_requests={1: 4, 8: 8, 32: 32},
    e2e=(
        "--epochs",
        "1",
        "--models",
        "cnn",
        "--workers",
        "1",
        "--min-accuracy",
        "0",
        "--ingest-args=--train-size 320 --test-size 100",
        "--train-args=--steps-per-epoch 2",
    ),
    timeout=300.0,
    together=True,
)
