"""How much work each measurement does: the full benchmark and its quick mode."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sizes:
    """FULL fits `make bench` in about 11 minutes on 2 cores."""

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


FULL = Sizes()

# Every code path once, at sizes where process start-up dominates: tests/test_bench.py runs it.
QUICK = Sizes(
    repeats=1,
    e2e_repeats=1,
    train_size=2_000,
    epoch_images=640,
    epochs=2,
    split_steps=3,
    split_fit_steps=6,
    pipeline_batches=20,
    latency_requests={1: 10, 32: 4},
    load_requests={1: 8, 8: 16, 32: 32},
    e2e=(
        "--epochs",
        "1",
        "--models",
        "cnn",
        "--workers",
        "1",
        "--min-accuracy",
        "0",
        "--ingest-args=--train-size 640 --test-size 200",
        "--train-args=--steps-per-epoch 3",
    ),
    timeout=300.0,
)
