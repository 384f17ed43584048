"""The Prometheus page (/monitoring/prometheus/metrics): TF Serving's series, by its names,
labels and units, then this server's own.

TF Serving 2.20 exports TensorFlow's monitoring metrics (util/prometheus_exporter.cc): each name
with `/` turned into `:`, a `# TYPE` line and no HELP, metrics in the order of their names,
label sets in order, counters as integers, histograms with cumulative `_bucket{le=...}` lines
(the last `+Inf`), `_sum` and `_count`; numbers in buckets and sums as printf's `%g`. Its
samplers count a value in the first bucket whose bound is *above* it (`upper_bound`), with
bounds 10 × 1.8^i µs, i < 33. The series, where TF Serving records them:

    :tensorflow:serving:request_count{model_name,status}      every REST request of a model
        (model_servers/http_server.cc), status the canonical code name (OK, NOT_FOUND...)
    :tensorflow:serving:request_latency{model_name,API,entrypoint}   µs, OK answers only; API
        the verb of a POST (predict, classify, regress), empty for a GET; entrypoint REST
    :tensorflow:serving:runtime_latency{model_name,API,runtime}      µs of running the model
        (API Predict, Classify, Regress; runtime TF1), servables/tensorflow/predict_util.cc
    :tensorflow:cc:saved_model:load_attempt_count{model_path,status}  success or fail, per
        version folder; :tensorflow:cc:saved_model:load_latency{model_path} µs, summed
    :tensorflow:serving:model_warmup_latency{model_path,status}, ...:model_warmup_records_read
        {model_path,status}: the warm-up of a version with a warm-up file (status "OK")

This server's own series (queue, batching, limits) follow, with HELP lines:
serving_batch_size, serving_dropped_requests_total, serving_queued_pixels,
serving_open_connections; then what the model predicts (signals.py):
serving_predictions_total, serving_prediction_confidence.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Sequence

from jobs.serving.signals import Signals


def exponential_bounds(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TensorFlow's Buckets::Exponential: scale × growth^i for i < count (then +Inf)."""
    bounds, bound = [], scale
    for _ in range(count):
        bounds.append(bound)
        bound *= growth
    return tuple(bounds)


LATENCY_BOUNDS = exponential_bounds(10, 1.8, 33)  # µs, "~20 minutes"


def _sanitized(name: str, invalid: str, replacement: str) -> str:
    """The exporter's names: invalid characters replaced, a leading digit prefixed with `_`."""
    name = re.sub(invalid, replacement, name)
    return "_" + name if name[:1].isdigit() else name


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return ",".join(
        f'{_sanitized(name, "[^a-zA-Z0-9]", "_")}="{escaped(value)}"' for name, value in zip(names, values, strict=True)
    )


def _number(value: float) -> str:
    return f"{value:g}"  # printf's %g, as absl::StrCat writes a double


class _Family:
    def __init__(self, name: str, labels: Sequence[str], lock: threading.Lock):
        self.name = name  # TensorFlow's name, with slashes
        self.labels = tuple(labels)
        self._lock = lock

    @property
    def exported(self) -> str:
        return _sanitized(self.name, "[^a-zA-Z0-9_]", ":")


class Counter(_Family):
    """A TensorFlow monitoring Counter: an integer per label set."""

    def __init__(self, name: str, labels: Sequence[str], lock: threading.Lock):
        super().__init__(name, labels, lock)
        self.cells: dict[tuple[str, ...], int] = {}

    def add(self, *values: str, amount: int = 1) -> None:
        with self._lock:
            self.cells[values] = self.cells.get(values, 0) + int(amount)

    def lines(self) -> list[str]:
        out = [f"# TYPE {self.exported} counter"]
        out += [f"{self.exported}{{{_labels(self.labels, k)}}} {v}" for k, v in sorted(self.cells.items())]
        return out


class Sampler(_Family):
    """A TensorFlow monitoring Sampler: a histogram per label set."""

    def __init__(self, name: str, labels: Sequence[str], lock: threading.Lock, bounds=LATENCY_BOUNDS):
        super().__init__(name, labels, lock)
        self.bounds = bounds
        self.cells: dict[tuple[str, ...], list] = {}

    def add(self, value: float, *values: str) -> None:
        with self._lock:
            cell = self.cells.setdefault(values, [[0] * (len(self.bounds) + 1), 0.0])
            cell[0][bisect.bisect_right(self.bounds, value)] += 1
            cell[1] += value

    def lines(self) -> list[str]:
        out = [f"# TYPE {self.exported} histogram"]
        for key, (counts, total) in sorted(self.cells.items()):
            labels = _labels(self.labels, key)
            prefix = f"{self.exported}_bucket{{{labels}{',' if labels else ''}"
            cumulative = 0
            for i, count in enumerate(counts):
                cumulative += count
                bound = _number(self.bounds[i]) if i < len(self.bounds) else "+Inf"
                out.append(f'{prefix}le="{bound}"}} {cumulative}')
            out.append(f"{self.exported}_sum{{{labels}}} {_number(total)}")
            out.append(f"{self.exported}_count{{{labels}}} {cumulative}")
        return out


class Metrics:
    def __init__(self, signals: Signals | None = None):
        self._signals = signals
        lock = threading.Lock()
        self._lock = lock
        self.request_count = Counter("/tensorflow/serving/request_count", ("model_name", "status"), lock)
        self.request_latency = Sampler("/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), lock)
        self.runtime_latency = Sampler("/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), lock)
        self.load_attempts = Counter("/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status"), lock)
        self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency", ("model_path",), lock)
        self.warmup_latency = Sampler("/tensorflow/serving/model_warmup_latency", ("model_path", "status"), lock)
        self.warmup_records = Counter("/tensorflow/serving/model_warmup_records_read", ("model_path", "status"), lock)
        self._tf = sorted(
            (
                self.request_count,
                self.request_latency,
                self.runtime_latency,
                self.load_attempts,
                self.load_latency,
                self.warmup_latency,
                self.warmup_records,
            ),
            key=lambda family: family.name,
        )
        # This server's own: the batching, the queue and the limits.
        self.batch_sizes: dict[int, int] = {}
        self.dropped: dict[str, int] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    # What TF Serving records.

    def request(self, model: str, status: str, api: str, seconds: float) -> None:
        self.request_count.add(model, status)
        if status == "OK":
            self.request_latency.add(int(seconds * 1e6), model, api, "REST")

    def runtime(self, model: str, api: str, seconds: float) -> None:
        self.runtime_latency.add(int(seconds * 1e6), model, api.capitalize(), "TF1")

    def load(self, path: str, ok: bool, seconds: float) -> None:
        self.load_attempts.add(path, "success" if ok else "fail")
        self.load_latency.add(path, amount=int(seconds * 1e6))

    def warmup(self, path: str, status: str, records: int, seconds: float) -> None:
        self.warmup_latency.add(int(seconds * 1e6), path, status)
        self.warmup_records.add(path, status, amount=records)

    # This server's own.

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1

    def drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def watch(self, queued_pixels: Callable[[], float], connections: Callable[[], float]) -> None:
        self._gauges = {"serving_queued_pixels": queued_pixels, "serving_open_connections": connections}

    def _own_lines(self) -> list[str]:
        with self._lock:
            sizes, dropped = dict(self.batch_sizes), dict(self.dropped)
        out = [
            "# HELP serving_batch_size Instances per signature call (requests merged and cut to --max-batch)",
            "# TYPE serving_batch_size histogram",
        ]
        cumulative = 0
        for bound in BATCH_BOUNDS:
            cumulative = sum(count for size, count in sizes.items() if size <= bound)
            out.append(f'serving_batch_size_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'serving_batch_size_bucket{{le="+Inf"}} {sum(sizes.values())}')
        out.append(f"serving_batch_size_sum {sum(size * count for size, count in sizes.items())}")
        out.append(f"serving_batch_size_count {sum(sizes.values())}")
        out += [
            "# HELP serving_dropped_requests_total Requests dropped before their answer, by reason (gone: the "
            "client left; deadline: over --request-timeout; queue_full, body_bytes: over a limit)",
            "# TYPE serving_dropped_requests_total counter",
        ]
        out += [f'serving_dropped_requests_total{{reason="{r}"}} {n}' for r, n in sorted(dropped.items())]
        helps = {
            "serving_queued_pixels": "Decoding cost (pixels of images, else values) of work queued or running",
            "serving_open_connections": "Open HTTP connections",
        }
        for name, read in self._gauges.items():
            out += [f"# HELP {name} {helps[name]}", f"# TYPE {name} gauge", f"{name} {_number(read())}"]
        if self._signals is not None:
            out += self._signals.lines(_labels, _number)
        return out

    def page(self) -> bytes:
        with self._lock:
            lines = [line for family in self._tf for line in family.lines()]
        return ("\n".join([*lines, *self._own_lines()]) + "\n").encode("utf-8")


BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain"  # what TF Serving sends with its page
