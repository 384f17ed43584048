"""What the model predicts: per-class counts and a confidence histogram per model version, and
a sampled prediction log (JSONL) for studying drift offline.

Which outputs are read (the rule, for any SavedModel): a signature's output named
`probabilities` (or `probs`), of a float type and declared shape [-1, K] with 2 <= K <= 100, is
a class distribution per instance. An instance's class is the index of its top probability and
its confidence that probability. The class is labelled with the model's own name for it when
the signature also has a string output `class_name` of shape [-1] (this project's models have
both), else with the index; the names are learnt per version, so a label set never grows past K.
Signatures without such an output (half_plus_two's regressions, most classify signatures,
whose `scores` need not sum to 1) add nothing to these series; their log lines carry no class.

The series (this server's own: TF Serving has none for predictions):

    serving_predictions_total{model_name,version,class}        instances predicted, per class
    serving_prediction_confidence{model_name,version}          histogram of the top probability
        (buckets CONFIDENCE_BOUNDS)

The prediction log is off unless a path is given. A sampled request writes one line per
instance: time, request_id (the client's X-Request-Id, else one made here; the answer carries
it back in X-Request-Id), model, version, instance, class, confidence and latency_ms (server
time from the request's arrival to its answer). When the file would pass `max_bytes` it is
renamed to `<path>.1` (older files shift to `.2`... up to `backups`, the oldest dropped) and
a new one is started, so the log never holds more than (backups + 1) × max_bytes.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from jobs.serving.servable import Servable, Signature

PROBABILITY_OUTPUTS = ("probabilities", "probs")
CLASS_NAME_OUTPUT = "class_name"
MAX_CLASSES = 100
CONFIDENCE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
FLOAT_TYPES = ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16")


@dataclasses.dataclass(frozen=True)
class Reading:
    """Where a signature's outputs hold the class distribution, and the classes' names."""

    probabilities: str
    classes: int
    names: str | None  # the string output naming each instance's class, if any


def reading(signature: Signature) -> Reading | None:
    """The rule above, applied to a signature's declared outputs."""
    for key in PROBABILITY_OUTPUTS:
        info = signature.outputs.get(key)
        if info is None or info.dtype not in FLOAT_TYPES or info.shape is None or len(info.shape) != 2:
            continue
        batch, classes = info.shape
        if batch == -1 and 2 <= classes <= MAX_CLASSES:
            names = signature.outputs.get(CLASS_NAME_OUTPUT)
            named = names is not None and names.dtype == "DT_STRING" and names.shape == (-1,)
            return Reading(key, classes, CLASS_NAME_OUTPUT if named else None)
    return None


@dataclasses.dataclass(frozen=True)
class Predicted:
    """One request's predictions: each instance's class label and confidence."""

    classes: tuple[str, ...]
    confidences: tuple[float, ...]


class _Version:
    """The counts of one model version: per class index, and confidences per bucket."""

    def __init__(self, classes: int):
        self.counts = [0] * classes
        self.names: list[str | None] = [None] * classes
        self.buckets = [0] * (len(CONFIDENCE_BOUNDS) + 1)  # the last: above 1 (or NaN)
        self.total = 0.0

    def snapshot(self):
        return list(self.counts), list(self.names), list(self.buckets), self.total


def _name(names: np.ndarray | None, row: int, index: int, rows: int) -> str:
    """The model's name for class `index`, from its class_name output's `row`, else the index."""
    if names is None or len(names) != rows:
        return str(index)
    value = names[row]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Signals:
    """The per-version counts; `observe` is called once per answered request."""

    def __init__(self):
        self._lock = threading.Lock()
        self._readings: dict[tuple[int, str], Reading | None] = {}
        self._versions: dict[tuple[str, int], _Version] = {}

    def _reading(self, signature: Signature) -> Reading | None:
        key = (id(signature), signature.name)
        try:
            return self._readings[key]
        except KeyError:
            found = self._readings[key] = reading(signature)
            return found

    def observe(
        self, model: str, servable: Servable, signature: Signature, outputs: dict[str, np.ndarray]
    ) -> Predicted | None:
        """Counts a request's predictions; None when the signature has no class distribution."""
        found = self._reading(signature)
        if found is None:
            return None
        probabilities = outputs.get(found.probabilities)
        if probabilities is None or probabilities.ndim != 2 or probabilities.shape[1] != found.classes:
            return None
        # Two numpy calls, then plain Python: a request holds few instances, and numpy's cost
        # per call (not per value) is what counts here (this runs for every answer).
        top = probabilities.argmax(axis=1).tolist()
        confidences = probabilities.max(axis=1).tolist()
        names = outputs.get(found.names) if found.names else None
        labels = []
        with self._lock:
            counts = self._versions.get((model, servable.version))
            if counts is None:
                counts = self._versions[(model, servable.version)] = _Version(found.classes)
            for i, index in enumerate(top):
                counts.counts[index] += 1
                confidence = confidences[i]
                if confidence == confidence:
                    counts.buckets[bisect.bisect_left(CONFIDENCE_BOUNDS, confidence)] += 1
                    counts.total += confidence
                else:  # NaN: only in +Inf, and not in the sum
                    counts.buckets[-1] += 1
                label = counts.names[index]
                if label is None:
                    label = counts.names[index] = _name(names, i, index, len(top))
                labels.append(label)
        return Predicted(tuple(labels), tuple(confidences))

    def lines(self, labels, number) -> list[str]:
        """The two series on the metrics page (`labels` and `number` format as the page does)."""
        with self._lock:
            versions = {key: c.snapshot() for key, c in self._versions.items()}
        out = [
            "# HELP serving_predictions_total Instances predicted, by model version and top class",
            "# TYPE serving_predictions_total counter",
        ]
        for (model, version), (counts, names, _, _) in sorted(versions.items()):
            for index, count in enumerate(counts):
                if count:
                    values = (model, str(version), names[index] or str(index))
                    label = labels(("model_name", "version", "class"), values)
                    out.append(f"serving_predictions_total{{{label}}} {count}")
        out += [
            "# HELP serving_prediction_confidence Top class probability of each instance predicted",
            "# TYPE serving_prediction_confidence histogram",
        ]
        for (model, version), (_, _, buckets, total) in sorted(versions.items()):
            label = labels(("model_name", "version"), (model, str(version)))
            cumulative = list(itertools.accumulate(buckets))
            for bound, count in zip(CONFIDENCE_BOUNDS, cumulative, strict=False):
                out.append(f'serving_prediction_confidence_bucket{{{label},le="{number(bound)}"}} {count}')
            out.append(f'serving_prediction_confidence_bucket{{{label},le="+Inf"}} {cumulative[-1]}')
            out.append(f"serving_prediction_confidence_sum{{{label}}} {number(total)}")
            out.append(f"serving_prediction_confidence_count{{{label}}} {cumulative[-1]}")
        return out


def request_id(headers) -> str:
    """The client's X-Request-Id (printable ASCII, at most 128 characters), else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and all(32 < byte < 127 for byte in value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


class PredictionLog:
    """The sampled JSONL log, rotated by size; writes are whole lines under a lock."""

    def __init__(self, path: Path, sample: float, max_bytes: int, backups: int):
        self.path = path
        self.sample = sample
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 (held open; closed by close())
        self._size = self._file.tell()

    def sampled(self) -> bool:
        return self.sample >= 1.0 or random.random() < self.sample

    def write(
        self, request: str, model: str, version: int, predicted: Predicted | None, count: int, seconds: float
    ) -> None:
        now = round(time.time(), 6)
        latency = round(seconds * 1000, 3)
        if predicted is None:
            rows = [(i, None, None) for i in range(count)]
        else:
            rows = list(zip(range(len(predicted.classes)), predicted.classes, predicted.confidences, strict=True))
        text = "".join(
            json.dumps(
                {
                    "time": now,
                    "request_id": request,
                    "model": model,
                    "version": version,
                    "instance": i,
                    "class": label,
                    "confidence": None if confidence is None or confidence != confidence else round(confidence, 6),
                    "latency_ms": latency,
                },
                separators=(",", ":"),
            )
            + "\n"
            for i, label, confidence in rows
        ).encode("utf-8")
        with self._lock:
            if self._file.closed:
                return
            if self._size and self._size + len(text) > self.max_bytes:
                self._rotate()
            self._file.write(text)
            self._file.flush()
            self._size += len(text)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups, 0, -1):
            newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            if newer.exists():
                os.replace(newer, self.path.with_name(f"{self.path.name}.{i}"))
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._file.close()
