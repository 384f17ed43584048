"""Benchmark the system: training scaling, input pipeline, serving, end to end, accuracy.

    python -m jobs.bench                      everything, about 11 minutes on 2 cores
    python -m jobs.bench --quick              the same code paths at tiny sizes (the smoke test)
    python -m jobs.bench --sections serving --url http://127.0.0.1:8501 --model-dir <SavedModel>
                                              serving only, against a running TF Serving

Every figure is the median of repeated measurements, with their min and max; every ratio is
computed within one repeat from a baseline and a candidate measured back to back, then
summarised the same way. Sections:

  training   images/s of the default CNN (jobs.train, synthetic data of Fashion-MNIST's shape):
             one process on all cores vs WORKERS MultiWorkerMirroredStrategy processes on the
             same cores, read from each run's history.json without the first (warm-up) epoch;
             then a step split inside WORKERS worker processes: compute, gradient all-reduce,
             a custom-loop step, and Keras fit steps
  input      images/s the tf.data training pipeline delivers alone, against what training used
  serving    p50/p99 latency for 1 and 32 images per request and throughput at concurrency
             1, 8, 32 against the local server (or --url), the same SavedModel called
             in-process as the baseline
  e2e        `python -m jobs.local --dataset synthetic` at default settings: wall time per stage
  accuracy   each candidate's test accuracy on real Fashion-MNIST, when it is on this machine

Results: results/bench-<time>.json (machine, versions, settings, figures, raw samples) and a
markdown table on stdout (also results/bench-<time>.md). Load goes to 127.0.0.1 only, unless
--url names another server; every request loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import importlib.metadata
import io
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs import distributed
from jobs.common import JobError, cpu_count, csv_list, parser, positive_int, run, write_json
from jobs.paths import MODEL_NAME, Work

log = logging.getLogger("jobs.bench")

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("training", "input", "serving", "e2e", "accuracy")
CONCURRENCY = (1, 8, 32)
REAL_DATASETS = ("fashion_mnist", "idx")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does. FULL fits `make bench` in about 11 minutes here."""

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


# --- figures -----------------------------------------------------------------------------


@dataclasses.dataclass
class Figure:
    key: str
    label: str
    unit: str
    samples: list[float] = dataclasses.field(default_factory=list)
    target: str = ""  # e.g. ">= 0.8"
    note: str = ""  # what limits it, or why it is missing
    text: str = ""  # a non-numeric value, e.g. "not available"

    def summary(self) -> dict:
        out: dict[str, Any] = {
            "label": self.label,
            "unit": self.unit,
            "n": len(self.samples),
            "samples": [round(s, 6) for s in self.samples],
        }
        if self.samples:
            out.update(median=statistics.median(self.samples), min=min(self.samples), max=max(self.samples))
        if self.target:
            out["target"] = self.target
            out["met"] = self.met()
        if self.note:
            out["note"] = self.note
        if self.text:
            out["text"] = self.text
        return out

    def met(self) -> bool | None:
        if not self.target or not self.samples:
            return None
        op, threshold = self.target.split()
        value = statistics.median(self.samples)
        return value >= float(threshold) if op == ">=" else value <= float(threshold)


class Figures:
    def __init__(self):
        self.items: dict[str, Figure] = {}

    def add(self, key: str, label: str, unit: str, value: float | None = None, **kwargs) -> Figure:
        figure = self.items.get(key)
        if figure is None:
            figure = self.items[key] = Figure(key, label, unit, **kwargs)
        if value is not None:
            figure.samples.append(float(value))
        return figure

    def text(self, key: str, label: str, text: str, **kwargs) -> Figure:
        return self.add(key, label, "", text=text, **kwargs)

    def as_json(self) -> dict:
        return {key: figure.summary() for key, figure in self.items.items()}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1000:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(figures: dict[str, dict]) -> str:
    """The figures as a markdown table: median, min-max, n, target."""
    rows = ["| figure | median | min – max | n | unit | target |", "|---|---:|---:|---:|---|---|"]
    for figure in figures.values():
        if figure.get("n"):
            median = _fmt(figure["median"])
            spread = f"{_fmt(figure['min'])} – {_fmt(figure['max'])}"
        else:
            median, spread = figure.get("text", "—"), ""
        target = figure.get("target", "")
        if target and figure.get("met") is not None:
            target += " ✔" if figure["met"] else " ✘ missed"
        rows.append(f"| {figure['label']} | {median} | {spread} | {figure['n'] or ''} | {figure['unit']} | {target} |")
    return "\n".join(rows)


# --- machine and versions ----------------------------------------------------------------


def machine() -> dict:
    import psutil

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cpus": cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-keras", "mlflow", "numpy", "httpx", "starlette", "uvicorn"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        found["commit"] = commit + ("-dirty" if dirty else "") if commit else None
    return found


# --- child processes ---------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a job we start: ours, minus a cluster or tracking server we may be in."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MLFLOW_TRACKING_URI", "FMNIST_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update(extra)
    return env


def run_group(argvs: list[tuple[list[str], dict[str, str]]], logs: Path, name: str, timeout: float):
    """Starts processes together and waits for all; a failure or the timeout ends them all and
    raises with the failed one's last lines. Returns the finished `jobs.local.Process`es."""
    from jobs.local import Process

    group = [
        Process(argv, logs / f"{name}-{i}.log", f"[{name}:{i}]", False, env) for i, (argv, env) in enumerate(argvs)
    ]
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in group]
            failed = [p for p, code in zip(group, codes, strict=True) if code not in (None, 0)]
            if failed:
                raise JobError(f"{name} failed\n{failed[0].describe_failure()}")
            if all(code == 0 for code in codes):
                for p in group:
                    p.wait()
                return group
            if time.monotonic() > deadline:
                raise JobError(f"{name} did not finish within {timeout:.0f} s (logs under {logs})")
            time.sleep(0.1)
    finally:
        for p in group:
            if p.poll() is None:
                p.kill()  # its process group: TERM, then KILL after a grace period
            p.wait()


# --- training ----------------------------------------------------------------------------


def ingest_synthetic(work: Work, train_size: int) -> None:
    from jobs import data

    data.write(
        data.synthetic(train_size, 200, seed=0),
        work.dataset("synthetic"),
        {"name": "synthetic", "train_size": train_size, "test_size": 200, "seed": 0},
    )


def train_throughput(history: dict, skip: int = 1) -> float:
    """images/s over the epochs after the first `skip` (compile and warm-up)."""
    epochs = [e for e in history["epochs"] if e["epoch"] >= skip]
    if not epochs:
        raise JobError("training history has no epoch after the warm-up epoch")
    seconds = sum(e["seconds"] for e in epochs)
    images = sum(e["images_per_second"] * e["seconds"] for e in epochs)
    return images / seconds


def train_once(
    work: Work, run_id: str, workers: int, steps: int, epochs: int, logs: Path, python: str, timeout: float
) -> float:
    """One `jobs.train` job of the cnn, launched like jobs.local launches it; its throughput."""
    argv = [
        python,
        "-m",
        "jobs.train",
        "--work-dir",
        str(work.root),
        "--run-id",
        run_id,
        "--dataset",
        "synthetic",
        "--model",
        "cnn",
        "--epochs",
        str(epochs),
        "--steps-per-epoch",
        str(steps),
    ]
    threads = str(max(1, cpu_count() // workers))
    if workers == 1:
        group = [(argv, child_env(FMNIST_THREADS=str(cpu_count())))]
    else:
        from jobs.local import free_ports

        addresses = [f"localhost:{port}" for port in free_ports(workers)]
        group = [
            (argv, child_env(FMNIST_THREADS=threads, TF_CONFIG=distributed.tf_config(addresses, i)))
            for i in range(workers)
        ]
    run_group(group, logs, run_id, timeout)
    history = json.loads(work.candidate(run_id, "cnn").history.read_text())
    return train_throughput(history)


def bench_training(
    figures: Figures, sizes: Sizes, work: Work, workers: int, python: str, pipeline: Callable[[], float] | None
) -> None:
    logs = work.root / "logs"
    ingest_synthetic(work, sizes.train_size)
    single_steps = max(1, sizes.epoch_images // 64)
    multi_steps = max(1, sizes.epoch_images // (64 * workers))
    for rep in range(sizes.repeats):
        order = ("single", "multi") if rep % 2 == 0 else ("multi", "single")  # cancels drift
        measured = {}
        for kind in order:
            n, steps = (1, single_steps) if kind == "single" else (workers, multi_steps)
            log.info("training: %s (%d process(es)), repeat %d/%d", kind, n, rep + 1, sizes.repeats)
            measured[kind] = train_once(work, f"{kind}-{rep}", n, steps, sizes.epochs, logs, python, sizes.timeout)
        figures.add("train.single", "training, 1 process on all cores", "images/s", measured["single"])
        figures.add("train.multi", f"training, {workers} MWMS workers on the same cores", "images/s", measured["multi"])
        figures.add(
            "train.efficiency",
            "multi-worker scaling efficiency (multi ÷ single)",
            "ratio",
            measured["multi"] / measured["single"],
            target=">= 0.8",
        )
        if pipeline is not None:
            delivered = pipeline()
            figures.add("input.pipeline", "input pipeline alone (batch 64)", "images/s", delivered)
            figures.add(
                "input.headroom",
                "input pipeline ÷ training consumption (1 process)",
                "ratio",
                delivered / measured["single"],
                target=">= 5",
            )
    if workers > 1:
        step_split(figures, sizes, work, workers, python)


def step_split(figures: Figures, sizes: Sizes, work: Work, workers: int, python: str) -> None:
    """Runs the split worker (below) in `workers` MWMS processes; reads the chief's timings."""
    from jobs.local import free_ports

    out = work.root / "split.json"
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    argv = [
        python,
        "-m",
        "jobs.bench",
        "--split-worker",
        str(out),
        "--split-steps",
        str(sizes.split_steps),
        "--split-fit-steps",
        str(sizes.split_fit_steps),
        "--repeats",
        str(sizes.repeats),
    ]
    threads = str(max(1, cpu_count() // workers))
    log.info("training: step split in %d workers", workers)
    run_group(
        [
            (argv, child_env(FMNIST_THREADS=threads, TF_CONFIG=distributed.tf_config(addresses, i)))
            for i in range(workers)
        ],
        work.root / "logs",
        "split",
        sizes.timeout,
    )
    result = json.loads(out.read_text())
    batch = result["batch_per_worker"]
    labels = {
        "compute": f"step split: forward+backward, {batch} images per worker",
        "allreduce": f"step split: gradient all-reduce ({result['gradient_bytes'] / 2**20:.2f} MiB)",
        "custom": "step split: custom-loop step (compute + all-reduce + Adam)",
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


def split_worker(out: Path, steps: int, fit_steps: int, repeats: int, batch: int = 64, spe: int = 10) -> None:
    """One MWMS worker timing the parts of a training step of the cnn. Both workers run the
    same blocks in the same order (each block starts with an all-reduce as a barrier)."""
    from jobs.common import configure_threads

    cluster = distributed.current()
    configure_threads()
    strategy = distributed.strategy(cluster)  # before any other TF op
    import tensorflow as tf
    import tf_keras as keras

    from jobs import data, models

    global_batch = batch * cluster.workers
    with strategy.scope():
        model = models.build("cnn")
        optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE)
    rng = np.random.default_rng(cluster.task_index)
    images = data.to_model_input(rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 10, batch), tf.int64)
    zeros = [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables]

    def gradients():
        with tf.GradientTape() as tape:
            per_example = loss_fn(labels, model(images, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        return tape.gradient(loss, model.trainable_variables)

    def checksum(tensors):
        return tf.add_n([tf.reduce_sum(t) for t in tensors])

    @tf.function
    def compute():
        return strategy.run(lambda: checksum(gradients()))

    @tf.function
    def allreduce():
        return strategy.run(
            lambda: checksum(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, zeros))
        )

    @tf.function
    def custom():
        def step():
            optimizer.apply_gradients(zip(gradients(), model.trainable_variables, strict=True))
            return tf.constant(0.0)

        return strategy.run(step)

    def timed(fn) -> float:
        allreduce()  # a barrier: both workers start the block together
        for _ in range(2):
            fn()
        started = time.perf_counter()
        for _ in range(steps):
            result = fn()
        for value in strategy.experimental_local_results(result):
            value.numpy()
        return (time.perf_counter() - started) / steps * 1000

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    split = data.synthetic(2_000, 10, seed=cluster.task_index)["train"]

    def fit_ms(steps_per_execution: int) -> float:
        """Per-step time of model.fit between the first and the last batch end (the iterator's
        creation, the first call and the epoch end are outside)."""
        with strategy.scope():
            model.compile(
                keras.optimizers.Adam(1e-3),
                "sparse_categorical_crossentropy",
                metrics=["accuracy"],
                steps_per_execution=steps_per_execution,
            )
        clock = StepClock()
        total = max(fit_steps, 3 * steps_per_execution)
        total -= total % steps_per_execution
        model.fit(
            data.training_pipeline(split, global_batch), epochs=1, steps_per_epoch=total, callbacks=[clock], verbose=0
        )
        return (clock.times[-1] - clock.times[0]) / ((len(clock.times) - 1) * steps_per_execution) * 1000

    ms: dict[str, list[float]] = {name: [] for name in ("compute", "allreduce", "custom", "fit", "fit_spe")}
    for _ in range(repeats):
        for name, fn in (("compute", compute), ("allreduce", allreduce), ("custom", custom)):
            ms[name].append(timed(fn))
        ms["fit"].append(fit_ms(1))
        ms["fit_spe"].append(fit_ms(spe))
    if cluster.is_chief:
        write_json(
            out,
            {
                "workers": cluster.workers,
                "batch_per_worker": batch,
                "steps_per_execution": spe,
                "ms": ms,
                "gradient_bytes": int(sum(v.shape.num_elements() * v.dtype.size for v in model.trainable_variables)),
            },
        )


# --- input pipeline ----------------------------------------------------------------------


def pipeline_meter(train_size: int, batches: int, batch: int = 64) -> Callable[[], float]:
    """A function measuring images/s of jobs.data.training_pipeline alone (in this process)."""
    from jobs import data

    split = data.synthetic(train_size, 10, seed=0)["train"]

    def measure() -> float:
        iterator = iter(data.training_pipeline(split, batch))
        for _ in range(20):  # fill the cache, the shuffle buffer and the prefetch
            next(iterator)
        started = time.perf_counter()
        for _ in range(batches):
            images, _labels = next(iterator)
        images.numpy()
        return batches * batch / (time.perf_counter() - started)

    return measure


# --- serving -----------------------------------------------------------------------------


def sample_images(count: int) -> list[bytes]:
    from PIL import Image

    from jobs import data

    pixels = data.synthetic(count, 10, seed=1)["train"].images
    encoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def predict_body(images: Sequence[bytes]) -> bytes:
    """A serving_default request in the reference format, serialised once up front."""
    return json.dumps(
        {"instances": [{"image_bytes": {"b64": base64.b64encode(i).decode("ascii")}} for i in images]}
    ).encode()


def export_model(target: Path) -> Path:
    """An untrained cnn exported like a promoted one: timing does not depend on the weights."""
    from jobs import export, models

    version = target / "1"
    export.save(models.build("cnn"), version)
    return version


@contextlib.contextmanager
def local_server(base: Path, logs: Path, python: str, timeout: float):
    from jobs.local import Process, free_ports

    port = free_ports(1)[0]
    argv = [
        python,
        "-m",
        "jobs.serve",
        "--model-base-path",
        str(base),
        "--model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = Process(argv, logs / "serve.log", "[serve]", False, child_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_available(url, MODEL_NAME, timeout, process)
        yield url
    finally:
        process.kill()


def wait_available(url: str, model: str, timeout: float, process=None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise JobError(f"the model server exited\n{process.describe_failure()}")
        try:
            answer = httpx.get(f"{url}/v1/models/{model}", timeout=5)
            states = [v.get("state") for v in answer.json().get("model_version_status", [])]
            if "AVAILABLE" in states:
                return
            last = f"{answer.status_code} {states or answer.text[:200]}"
        except (httpx.HTTPError, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    tail = f"\n{process.describe_failure()}" if process is not None else ""
    raise JobError(f"{url} did not report {model} AVAILABLE within {timeout:.0f} s (last: {last}){tail}")


class InProcess:
    """The baseline: the same SavedModel's serving_default called in this process, the way the
    server calls it (tensor in, every output fetched as numpy)."""

    def __init__(self, model_dir: Path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(model_dir))
        self._fn = self._loaded.signatures["serving_default"]

    def __call__(self, images: Sequence[bytes]) -> None:
        outputs = self._fn(image_bytes=self._tf.constant(list(images), dtype=self._tf.string))
        for value in outputs.values():
            value.numpy()


def latencies_ms(call: Callable[[], None], count: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


class Http:
    """HTTP/1.1 keep-alive requests on one connection, with as little client work as can be:
    the load generator shares the CPUs with the server, so a heavy client (httpx costs
    milliseconds per request here) would measure itself. Plain http only."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.host, self.port, self.prefix = split_url(url)
        self.timeout = timeout
        self._sock = None
        self._file = None

    def _connect(self) -> None:
        import socket

        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = self._file = None

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request; on a kept-alive connection that the server has closed meanwhile (its
        keep-alive timeout passed) it is sent once more on a new one, as HTTP clients do."""
        reused = self._sock is not None
        try:
            return self._request(method, path, body)
        except (ConnectionError, BrokenPipeError) as err:
            if not reused or getattr(err, "answered", False):
                raise
            return self._request(method, path, body)

    def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self._sock is None:
            self._connect()
        try:
            self._sock.sendall(request_head(method, self.host, self.prefix + path, len(body)) + body)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self._file.readline(65536)
                if not line:
                    closed = ConnectionError("the server closed the connection")
                    closed.answered = bool(head)  # type: ignore[attr-defined]
                    raise closed
                head += line
            status, length, close = parse_head(head)
            answer = self._file.read(length) if length else b""
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer


def split_url(url: str) -> tuple[str, int, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise JobError(f"--url must be http://host[:port][/prefix], got {url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def request_head(method: str, host: str, path: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode("latin-1")


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server closes the connection."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip().lower() for k, v in headers.items()}
    if "content-length" not in headers:
        raise ConnectionError(f"answer without Content-Length ({lines[0]})")
    return status, int(headers["content-length"]), headers.get("connection") == "close"


def http_predict(client: Http, model: str) -> Callable[[bytes], None]:
    def call(body: bytes) -> None:
        status, answer = client.request("POST", f"/v1/models/{model}:predict", body)
        if status != 200 or b'"predictions"' not in answer:
            raise JobError(f"predict answered {status}: {answer[:300]!r}")

    return call


async def _load(
    url: str, model: str, bodies: list[bytes], concurrency: int, total: int, timeout: float
) -> tuple[int, int, float]:
    """`total` requests from `concurrency` keep-alive connections, round-robin over `bodies`;
    returns (ok, errors, seconds). Bounded by the count and by `timeout`."""
    host, port, prefix = split_url(url)
    path = f"{prefix}/v1/models/{model}:predict"
    sent = ok = errors = 0
    deadline = time.monotonic() + timeout

    async def connect():
        return await asyncio.wait_for(asyncio.open_connection(host, port), 30)

    async def worker(connection):
        nonlocal sent, ok, errors
        reader, writer = connection
        while sent < total and time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            try:
                if writer is None:
                    reader, writer = await connect()
                writer.write(request_head("POST", host, path, len(body)) + body)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                status, length, close = parse_head(head)
                answer = await reader.readexactly(length)
                if status == 200 and b'"predictions"' in answer:
                    ok += 1
                else:
                    errors += 1
                if close:
                    writer.close()
                    writer = None
            except (
                TimeoutError,
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
                IndexError,
            ):
                errors += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    # The connections are opened before the clock starts.
    connections = await asyncio.gather(*(connect() for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    return ok, errors, time.perf_counter() - started


def bench_serving(
    figures: Figures, sizes: Sizes, work: Work, python: str, url: str | None, model_name: str, model_dir: Path | None
) -> None:
    images = sample_images(64)
    bodies = {n: predict_body(images[:n]) for n in (1, 32)}
    single_bodies = [predict_body([image]) for image in images]
    with contextlib.ExitStack() as stack:
        if url is None:
            model_dir = export_model(work.served())
            url = stack.enter_context(local_server(work.served(), work.root / "logs", python, 180))
            where = "local server"
        else:
            url = url.rstrip("/")
            wait_available(url, model_name, 60)
            where = "server at --url"
        baseline = InProcess(model_dir) if model_dir is not None else None
        client = Http(url)
        stack.callback(client.close)
        remote = http_predict(client, model_name)
        for rep in range(sizes.repeats):
            for n, count in sizes.latency_requests.items():
                images_text = "1 image" if n == 1 else f"{n} images"
                log.info("serving: latency with %d image(s) per request, repeat %d/%d", n, rep + 1, sizes.repeats)
                server = latencies_ms(lambda n=n: remote(bodies[n]), count)
                _latency_figures(figures, f"server{n}", f"{where}, {images_text}/request", server)
                if baseline is None:
                    continue
                local = latencies_ms(lambda n=n: baseline(images[:n]), count)
                _latency_figures(figures, f"inproc{n}", f"in-process, {images_text}/call", local)
                figures.add(
                    f"serve.overhead{n}.p50",
                    f"server overhead at p50, {images_text} (server − in-process)",
                    "ms",
                    percentile(server, 50) - percentile(local, 50),
                    target="<= 2" if n == 1 else "",
                )
                figures.add(
                    f"serve.ratio{n}.p50",
                    f"server ÷ in-process at p50, {images_text}",
                    "ratio",
                    percentile(server, 50) / percentile(local, 50),
                )
            if baseline is not None:
                calls = sizes.latency_requests[32]
                started = time.perf_counter()
                for _ in range(calls):
                    baseline(images[:32])
                figures.add(
                    "serve.inproc.throughput32",
                    "in-process throughput, 32 images/call, sequential",
                    "images/s",
                    calls * 32 / (time.perf_counter() - started),
                )
            for concurrency in CONCURRENCY:
                total = sizes.load_requests[concurrency]
                log.info(
                    "serving: %d requests at concurrency %d, repeat %d/%d", total, concurrency, rep + 1, sizes.repeats
                )
                ok, errors, seconds = asyncio.run(
                    _load(url, model_name, single_bodies, concurrency, total, timeout=sizes.timeout)
                )
                figures.add(
                    f"serve.throughput.c{concurrency}",
                    f"{where} throughput, concurrency {concurrency}, 1 image/request",
                    "images/s",
                    ok / seconds,
                )
                figures.add(
                    f"serve.errors.c{concurrency}",
                    f"errors at concurrency {concurrency}",
                    "requests",
                    errors,
                    target="<= 0" if concurrency == 32 else "",
                )
        if baseline is None:
            figures.text("serve.baseline", "in-process baseline", "skipped (no --model-dir)")


def _latency_figures(figures: Figures, key: str, label: str, times: list[float]) -> None:
    figures.add(f"serve.{key}.p50", f"p50 latency, {label}", "ms", percentile(times, 50))
    figures.add(f"serve.{key}.p99", f"p99 latency, {label}", "ms", percentile(times, 99))


# --- end to end and accuracy -------------------------------------------------------------


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
    timings = json.loads((work.run(run_id) / "timings.json").read_text())
    from jobs import models

    accuracy = {}
    for name in models.NAMES:
        metrics = work.candidate(run_id, name).eval / "metrics.json"
        if metrics.exists():
            accuracy[name] = json.loads(metrics.read_text())["accuracy"]
    promotion = json.loads((work.run(run_id) / "promotion.json").read_text())
    return {
        "wall": wall,
        "runner_wall": timings["wall_seconds"],
        "stages": timings["stages"],
        "accuracy": accuracy,
        "promoted": promotion.get("model"),
    }


def bench_e2e(figures: Figures, sizes: Sizes, work_root: Path, python: str) -> None:
    for rep in range(sizes.e2e_repeats):
        result = run_local(
            Work(work_root / f"e2e-{rep}"), f"bench-e2e-{rep}", "synthetic", sizes.e2e, python, sizes.timeout * 2
        )
        settings = "quick settings" if sizes.e2e else "default settings"
        figures.add(
            "e2e.wall",
            f"end to end: make local DATASET=synthetic, {settings}",
            "s",
            result["wall"],
            target="<= 180" if not sizes.e2e else "",
        )
        for stage, seconds in ordered_stages(result["stages"]):
            figures.add(f"e2e.stage.{stage}", f"end to end stage: {stage}", "s", seconds)
        figures.add(
            "e2e.outside",
            "end to end: outside the stages (runner start-up, tracking set-up, summary)",
            "s",
            result["wall"] - sum(result["stages"].values()),
        )
        for model, accuracy in result["accuracy"].items():
            figures.add(f"e2e.accuracy.{model}", f"synthetic test accuracy: {model}", "fraction", accuracy)


def ordered_stages(stages: dict[str, float]) -> list[tuple[str, float]]:
    """The runner's stage timings in pipeline order (the JSON file has them sorted by name)."""
    from jobs import models, steps

    rank = {step.name: i for i, step in enumerate(steps.STEPS)}
    model_rank = {name: i for i, name in enumerate(models.NAMES)}  # the runner's default order

    def key(item):
        step, _, model = item[0].partition(":")
        return rank.get(step, len(rank)), model_rank.get(model, len(model_rank)), item[0]

    return sorted(stages.items(), key=key)


def real_data(work: Work) -> tuple[str, Callable[[Work], None], list[str]] | None:
    """Where real Fashion-MNIST is on this machine, without downloading: an ingested copy
    under <work>/data, a tensorflow-datasets cache under <work>/tfds, or the four official
    files under <work>/idx. Returns (dataset, prepare a bench work dir, extra jobs.local flags)."""
    from jobs import data

    for name in REAL_DATASETS:
        folder = work.dataset(name)
        manifest = data.read_manifest(folder) if (folder / "manifest.json").exists() else None
        if manifest and manifest.get("source", {}).get("name") == name:

            def prepare(target: Work, folder=folder, name=name) -> None:
                _link_tree(folder, target.dataset(name))

            extra = []
            if name == "idx":
                extra = [f"--ingest-args=--idx-dir {shlex.quote(manifest['source']['folder'])}"]
            return name, prepare, extra
    if (work.tfds / "fashion_mnist").is_dir():
        return "fashion_mnist", lambda target: _link_tree(work.tfds, target.tfds), []
    if all((work.idx / name).exists() for name in data.IDX_FILES.values()):
        return "idx", lambda target: None, [f"--ingest-args=--idx-dir {shlex.quote(str(work.idx.resolve()))}"]
    return None


def _link_tree(source: Path, target: Path) -> None:
    """Copies a folder by hard links where the file system allows (the data is read-only)."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


def bench_accuracy(figures: Figures, sizes: Sizes, data_work: Work, work_root: Path, python: str) -> None:
    found = real_data(data_work)
    if found is None:
        figures.text(
            "accuracy.real",
            "real Fashion-MNIST test accuracy, best candidate",
            "not available",
            target=">= 0.91",
            note=f"no Fashion-MNIST under {data_work.root} (data/fashion_mnist, tfds/ or idx/)",
        )
        return
    dataset, prepare, extra = found
    flags = [*extra, *(f for f in sizes.e2e if not f.startswith("--ingest-args"))]
    result = run_local(
        Work(work_root / "accuracy"), "bench-accuracy", dataset, flags, python, sizes.timeout * 6, prepare
    )
    for model, accuracy in result["accuracy"].items():
        figures.add(f"accuracy.{model}", f"real Fashion-MNIST test accuracy: {model}", "fraction", accuracy)
    figures.add(
        "accuracy.best",
        "real Fashion-MNIST test accuracy, best candidate",
        "fraction",
        max(result["accuracy"].values()),
        target=">= 0.91" if not sizes.e2e else "",
    )


# --- main --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for the JSON and markdown results")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that every path runs")
    p.add_argument(
        "--sections", type=csv_list(SECTIONS), default=",".join(SECTIONS), help="comma-separated sections to run"
    )
    p.add_argument("--workers", type=positive_int, default=2, help="MultiWorkerMirroredStrategy processes")
    p.add_argument("--repeats", type=positive_int, help="repeats of each measurement (default: 3, --quick 1)")
    p.add_argument(
        "--e2e-repeats", type=positive_int, help="end-to-end runs (default: 3, --quick 1; one takes minutes)"
    )
    p.add_argument("--url", help="serving: measure this TF Serving base URL instead of a local server")
    p.add_argument("--model-name", default=MODEL_NAME, help="serving: the model name in the URL paths")
    p.add_argument(
        "--model-dir", type=Path, help="serving with --url: the served SavedModel, for the in-process baseline"
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".work"),
        help="accuracy: where to look for real Fashion-MNIST (never downloaded here)",
    )
    p.add_argument("--scratch", type=Path, help="scratch folder (default: a temp dir, deleted afterwards)")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    # The step split's worker processes run this module with these.
    p.add_argument("--split-worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--split-steps", type=positive_int, default=FULL.split_steps, help=argparse.SUPPRESS)
    p.add_argument("--split-fit-steps", type=positive_int, default=FULL.split_fit_steps, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.split_worker:
        split_worker(args.split_worker, args.split_steps, args.split_fit_steps, args.repeats or 1)
        return 0
    if args.model_dir is not None and not (args.model_dir / "saved_model.pb").exists():
        raise JobError(f"--model-dir {args.model_dir} holds no saved_model.pb")
    sizes = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        sizes, repeats=args.repeats or sizes.repeats, e2e_repeats=args.e2e_repeats or sizes.e2e_repeats
    )
    sections = args.sections
    if args.url and sections == list(SECTIONS):
        sections = ["serving"]

    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "quick": args.quick,
            "sections": sections,
            "workers": args.workers,
            "url": args.url,
            **{k: v for k, v in dataclasses.asdict(sizes).items()},
        },
        "sections": {},
    }
    figures = Figures()
    if {"input", "serving"} & set(sections):
        from jobs.common import configure_threads

        configure_threads()  # this process measures the pipeline and the in-process baseline
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fmnist-bench-"))
    scratch = scratch.resolve()
    try:

        def section(name: str, fn: Callable[[], None]) -> None:
            if name not in sections:
                return
            log.info("section %s", name)
            began = time.monotonic()
            load_before = os.getloadavg()[0]
            fn()
            report["sections"][name] = {
                "seconds": round(time.monotonic() - began, 1),
                "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }

        meter = pipeline_meter(sizes.train_size, sizes.pipeline_batches) if "input" in sections else None
        if "training" in sections:
            section(
                "training",
                lambda: bench_training(figures, sizes, Work(scratch / "train"), args.workers, args.python, meter),
            )
        elif meter is not None:  # the pipeline alone, without a training figure to compare with
            section(
                "input",
                lambda: [
                    figures.add("input.pipeline", "input pipeline alone (batch 64)", "images/s", meter())
                    for _ in range(sizes.repeats)
                ],
            )
        section(
            "serving",
            lambda: bench_serving(
                figures, sizes, Work(scratch / "serve"), args.python, args.url, args.model_name, args.model_dir
            ),
        )
        section("e2e", lambda: bench_e2e(figures, sizes, scratch, args.python))
        section("accuracy", lambda: bench_accuracy(figures, sizes, Work(args.work_dir.resolve()), scratch, args.python))
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)

    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["figures"] = figures.as_json()
    markdown = render(report)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"bench-{stamp}.json", report)
    (args.out / f"bench-{stamp}.md").write_text(markdown + "\n")
    print(markdown, flush=True)
    print(f"\nresults: {args.out / f'bench-{stamp}.json'}", flush=True)
    return 0


def render(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    head = (
        f"{report['date'][:10]}, {m['cpu_model']}, {m['cores']} cores ({m['usable_cpus']} usable), "
        f"{m['memory_gib']} GiB, {m['os']}; Python {v['python']}, TensorFlow {v['tensorflow']}, "
        f"tf-keras {v['tf-keras']}, MLflow {v['mlflow']}; "
        f"load average {m['load_average_at_start'][0]} at start, {m['load_average_at_end'][0]} at end; "
        f"{'quick mode, ' if report['settings']['quick'] else ''}{report['seconds']:.0f} s in all"
    )
    return head + "\n\n" + table(report["figures"])


if __name__ == "__main__":
    sys.exit(run(main))
