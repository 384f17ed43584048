"""The serving section's baseline: the served SavedModel's serving_default called in a process
of its own, with the thread pools the local server gives TensorFlow (`--tensorflow_*_parallelism`
left at 0), so that server ÷ in-process compares the HTTP path and nothing else.

    python -m bench.inprocess --model-dir D     (driven by bench.serving through `InProcess`)

It reads one JSON command per line on stdin and answers one JSON line on stdout:
    {"op": "latency", "images": n, "count": c}     → {"ms": [...]}  (after 3 untimed calls)
    {"op": "throughput", "images": n, "calls": c}  → {"rate": images per second}, sequential calls
The images are the bench's own sample images (bench.serving.sample_images), made on both sides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jobs.core.cli import JobError, parser

WARMUP = 3


class Model:
    """The SavedModel's serving_default, called the way the server calls it (tensor in, every
    output fetched as numpy)."""

    def __init__(self, model_dir: Path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(model_dir))
        self._fn = self._loaded.signatures["serving_default"]

    def __call__(self, images: Sequence[bytes]) -> None:
        outputs = self._fn(image_bytes=self._tf.constant(list(images), dtype=self._tf.string))
        for value in outputs.values():
            value.numpy()


def latencies_ms(model: Model, images: list[bytes], count: int) -> list[float]:
    for _ in range(WARMUP):
        model(images)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        model(images)
        times.append((time.perf_counter() - started) * 1000)
    return times


def throughput(model: Model, images: list[bytes], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        model(images)
    return calls * len(images) / (time.perf_counter() - started)


class InProcess:
    """The baseline's process: started once per serving section, asked per measurement."""

    def __init__(self, model_dir: Path, python: str, env: dict[str, str]):
        argv = [python, "-m", "bench.inprocess", "--model-dir", str(model_dir)]
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1
        )
        self.threads = int(self._ask({"op": "threads"})["intra"])

    def _ask(self, command: dict) -> dict:
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # it exited: said below
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            raise JobError(f"the in-process baseline exited with status {self._process.returncode} (see above)")
        return json.loads(line)

    def latencies_ms(self, images: int, count: int) -> list[float]:
        return self._ask({"op": "latency", "images": images, "count": count})["ms"]

    def throughput(self, images: int, calls: int) -> float:
        return self._ask({"op": "throughput", "images": images, "calls": calls})["rate"]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("The serving bench's in-process baseline (driven by bench.serving).")
    p.prog = "python -m bench.inprocess"
    p.add_argument("--model-dir", type=Path, required=True, help="the SavedModel version folder")
    args = p.parse_args(argv)
    from bench.serving import sample_images
    from jobs.core.cpus import configure_threads, serving_intra_op_threads

    intra = configure_threads(serving_intra_op_threads())
    model = Model(args.model_dir)
    images = sample_images(64)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "threads":
            answer: dict = {"intra": intra}
        elif command["op"] == "latency":
            answer = {"ms": latencies_ms(model, images[: command["images"]], command["count"])}
        else:
            answer = {"rate": throughput(model, images[: command["images"]], command["calls"])}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    from jobs.core.cli import run

    sys.exit(run(main))
