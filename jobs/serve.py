"""A local model server that keeps TF Serving's REST contract (the part this project uses).

    GET  /v1/models/<name>[/versions/<N>]              model_version_status
    GET  /v1/models/<name>[/versions/<N>]/metadata     signature defs
    POST /v1/models/<name>[/versions/<N>]:predict      {"instances": ...} or {"inputs": ...}
    GET  /monitoring/prometheus/metrics                Prometheus text format

Versions are numeric folders under --model-base-path; the highest one is served. A poller
thread notices a new version, loads it fully (and runs every signature once), then swaps it
in; requests already running finish on the version they started with, and the old one is
released when the last of them is done. A version that fails to load never replaces the one
being served: its failure is shown in the model status and the log.

Signature calls run on a few worker threads, off the event loop. Requests that queue up
while a call runs are merged into one batch (up to --max-batch instances), which is where a
2-core machine gets its throughput from; an idle server adds no waiting time.

Client mistakes are answered as TF Serving answers them: `{"error": "..."}` with 400 (404 for
an unknown model or version, 413 for a body over --max-body-bytes), never a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import dataclasses
import gc
import io
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common import JobError, parser, port_number, positive_float, positive_int, run
from jobs.paths import MODEL_NAME, versions

log = logging.getLogger("jobs.serve")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_INSTANCES = 1024
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
# Bodies above this are parsed on a worker thread so that they do not stall the event loop.
INLINE_PARSE_BYTES = 64 * 1024
# An oversized body up to this size is read and dropped before the 413, so that the client
# sees the answer instead of a reset connection; beyond it the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
METRICS_PATH = "/monitoring/prometheus/metrics"
PREDICT_METHOD = "tensorflow/serving/predict"

PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(predict|classify|regress)", re.I)
METADATA_RE = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?/metadata", re.I)
STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?", re.I)


class ApiError(Exception):
    """A request that cannot be served: answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# --- servables ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype  # np.dtype(object) for strings
    shape: tuple[int | None, ...]  # None for an unknown dimension

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)


@dataclasses.dataclass
class Signature:
    name: str
    function: Any  # a concrete function taking keyword tensors
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Servable:
    """One loaded version. `inflight` counts the requests that hold it."""

    def __init__(self, version: int, path: Path, model: Any, signatures: dict[str, Signature], metadata: dict):
        self.version = version
        self.path = path
        self.model = model
        self.signatures = signatures
        self.metadata = metadata
        self._lock = threading.Lock()
        self._inflight = 0

    def acquire(self) -> None:
        with self._lock:
            self._inflight += 1

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight


def _np_dtype(tf_dtype) -> np.dtype:
    import tensorflow as tf

    return np.dtype(object) if tf_dtype == tf.string else np.dtype(tf_dtype.as_numpy_dtype)


def _spec(name: str, tf_spec) -> TensorSpec:
    shape = tuple(tf_spec.shape.as_list()) if tf_spec.shape.rank is not None else ()
    return TensorSpec(name, _np_dtype(tf_spec.dtype), shape)


def _signature_metadata(path: Path) -> dict:
    """The signature defs as TF Serving's metadata call prints them (proto field names)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    defs = {
        key: json_format.MessageToDict(value, preserving_proto_field_name=True)
        for key, value in saved.meta_graphs[0].signature_def.items()
        if not key.startswith("__")
    }
    return {"signature_def": {"signature_def": defs, "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap"}}


def _warmup_value(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if dim is None else dim for dim in spec.shape)
    if spec.is_string:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (28, 28)).save(buffer, "PNG")
        return np.full(shape, buffer.getvalue(), dtype=object)
    return np.zeros(shape, spec.dtype)


def load_servable(path: Path, version: int) -> Servable:
    """Loads a SavedModel version and runs each signature once, so that a version which
    cannot serve fails here rather than on a client's request."""
    import tensorflow as tf

    model = tf.saved_model.load(str(path))
    if not model.signatures:
        raise ValueError(f"{path} has no serving signatures")
    signatures = {}
    for name, function in model.signatures.items():
        _, kwargs = function.structured_input_signature
        inputs = {key: _spec(key, spec) for key, spec in kwargs.items()}
        outputs = {key: _spec(key, spec) for key, spec in function.structured_outputs.items()}
        signature = Signature(name, function, inputs, outputs)
        call_signature(signature, {k: _warmup_value(s) for k, s in inputs.items()})
        signatures[name] = signature
    return Servable(version, path, model, signatures, _signature_metadata(path))


def call_signature(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    tensors = {
        name: tf.constant(value.tolist() if value.dtype == object else value, dtype=tf.string)
        if signature.inputs[name].is_string
        else tf.constant(value)
        for name, value in inputs.items()
    }
    result = signature.function(**tensors)
    return {name: tensor.numpy() for name, tensor in result.items()}


# --- versions on disk, loading and swapping ---------------------------------------------


def _error_code(err: BaseException) -> str:
    import tensorflow as tf

    if isinstance(err, tf.errors.OpError):
        return {
            getattr(tf.errors, name): name
            for name in (
                "CANCELLED",
                "UNKNOWN",
                "INVALID_ARGUMENT",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION",
                "ABORTED",
                "OUT_OF_RANGE",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNAUTHENTICATED",
            )
        }.get(err.error_code, "UNKNOWN")
    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
        return "NOT_FOUND"
    return "UNKNOWN"


def short_error(err: BaseException) -> str:
    """One line from a TensorFlow error: its message without node names and stack notes."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    skip = ("Graph execution error", "Detected at node", "[[{{node", "<stack traces", "Op:__inference")
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(skip)]
    return " ".join(kept or lines)[:500]


@dataclasses.dataclass
class VersionState:
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's names)
    error_code: str = "OK"
    error_message: str = ""

    def as_json(self, version: int) -> dict:
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


class ModelManager:
    """Serves the highest numeric version under `base`, polling for new ones."""

    def __init__(self, name: str, base: Path, poll_seconds: float, on_change=None):
        self.name = name
        self.base = base
        self.poll_seconds = poll_seconds
        self._on_change = on_change or (lambda servable: None)
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, tuple[int, int]] = {}  # version -> identity of the dir that failed
        self._retired: list[Servable] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty = False

    # The request side.

    def acquire(self, version: int | None) -> Servable:
        """The servable for a request (the latest, or a specific version), held until release."""
        with self._lock:
            current = self._current
            if current is None or (version is not None and version != current.version):
                spec = f"Latest({self.name})" if version is None else f"Specific({self.name}, {version})"
                raise ApiError(404, f"Servable not found for request: {spec}")
            current.acquire()
            return current

    def status(self, version: int | None) -> dict:
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise ApiError(404, f"Could not find version {version} of model {self.name}")
            return {"model_version_status": [states[version].as_json(version)]}
        if not states:
            raise ApiError(404, f"Could not find any versions of model {self.name}")
        return {"model_version_status": [states[v].as_json(v) for v in sorted(states, reverse=True)]}

    @property
    def current(self) -> Servable | None:
        with self._lock:
            return self._current

    # The poller side.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any surprise; say what happened
                log.exception("version poll failed; retrying in %.1fs", self.poll_seconds)
            self._stop.wait(self.poll_seconds)

    def poll_once(self) -> None:
        self._release_retired()
        found = versions(self.base)
        if not found:
            if not self._warned_empty:
                log.warning("no versions of %s under %s yet (waiting for a numeric folder)", self.name, self.base)
                self._warned_empty = True
            return
        self._warned_empty = False
        target = max(found)
        current = self.current
        if current is not None and current.version == target:
            return
        path = found[target]
        try:
            stat = path.stat()
        except OSError:
            return  # renamed away between the listing and now: next poll
        identity = (stat.st_ino, stat.st_mtime_ns)
        if self._failed.get(target) == identity:
            return
        self._load(target, path, identity)

    def _load(self, version: int, path: Path, identity: tuple[int, int]) -> None:
        log.info("loading %s version %d from %s", self.name, version, path)
        with self._lock:
            self._states[version] = VersionState("LOADING")
        started = time.monotonic()
        try:
            servable = load_servable(path, version)
        except Exception as err:  # any failure to load: report it and keep the current one
            self._failed[version] = identity
            message = f"failed to load {path}: {short_error(err)}"
            with self._lock:
                self._states[version] = VersionState("END", _error_code(err), message)
                serving = self._current.version if self._current else None
            log.error(
                "%s version %d %s; still serving %s",
                self.name,
                version,
                message,
                f"version {serving}" if serving is not None else "nothing",
            )
            self._on_change(None)
            return
        self._failed.pop(version, None)
        with self._lock:
            old, self._current = self._current, servable
            self._states[version] = VersionState("AVAILABLE")
            if old is not None and old.version != version:
                self._states[old.version] = VersionState("UNLOADING")
            if old is not None:
                self._retired.append(old)
        log.info("serving %s version %d (loaded in %.1fs)", self.name, version, time.monotonic() - started)
        self._on_change(servable)
        self._release_retired()

    def _release_retired(self) -> None:
        """Drops old versions once no request holds them any more."""
        with self._lock:
            done = [s for s in self._retired if s.inflight == 0]
            self._retired = [s for s in self._retired if s.inflight > 0]
            for servable in done:
                if self._current is None or servable.version != self._current.version:
                    self._states[servable.version] = VersionState("END")
        for servable in done:
            log.info("released %s version %d", self.name, servable.version)
        if done:
            del servable, done
            gc.collect()


# --- batching ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    servable: Servable
    signature: Signature
    inputs: dict[str, np.ndarray]
    size: int
    future: concurrent.futures.Future


class Batcher:
    """Runs signature calls on worker threads; jobs for the same version and signature that
    are waiting when a worker picks up work are merged into one call of up to `max_batch`."""

    def __init__(self, threads: int, max_batch: int, on_batch=None):
        self.max_batch = max_batch
        self._on_batch = on_batch or (lambda size: None)
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"predict-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray], size: int
    ) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise ApiError(503, "server is shutting down")
            self._jobs.append(_Job(servable, signature, inputs, size, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            first = self._jobs.popleft()
            taken, total = [first], first.size
            keep: collections.deque[_Job] = collections.deque()
            while self._jobs and total < self.max_batch:
                job = self._jobs.popleft()
                if (
                    job.servable is first.servable
                    and job.signature is first.signature
                    and total + job.size <= self.max_batch
                ):
                    taken.append(job)
                    total += job.size
                else:
                    keep.append(job)
            keep.extend(self._jobs)
            self._jobs = keep
            return taken

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self._run(jobs)
            del jobs  # do not hold a retired version while waiting for the next job

    def _run(self, jobs: list[_Job]) -> None:
        first = jobs[0]
        if len(jobs) == 1:
            self._run_one(first)
            return
        merged = {name: np.concatenate([job.inputs[name] for job in jobs]) for name in first.inputs}
        try:
            outputs = call_signature(first.signature, merged)
        except Exception:
            # One bad request must not fail the others: run them one by one.
            for job in jobs:
                self._run_one(job)
            return
        self._on_batch(sum(job.size for job in jobs))
        offset = 0
        for job in jobs:
            part = {name: value[offset : offset + job.size] for name, value in outputs.items()}
            offset += job.size
            job.future.set_result(part)

    def _run_one(self, job: _Job) -> None:
        import tensorflow as tf

        try:
            outputs = call_signature(job.signature, job.inputs)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, tf.errors.FailedPreconditionError) as err:
            job.future.set_exception(bad_request(short_error(err)))
            return
        except Exception as err:
            log.exception("signature %s failed", job.signature.name)
            job.future.set_exception(ApiError(500, f"prediction failed: {short_error(err)}"))
            return
        self._on_batch(job.size)
        job.future.set_result(outputs)


# --- request decoding --------------------------------------------------------------------


@dataclasses.dataclass
class PredictRequest:
    signature: Signature
    inputs: dict[str, np.ndarray]
    size: int
    row_format: bool


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("JSON Parse error: the request body is empty")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("JSON Parse error: the body is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise bad_request(f"JSON Parse error: {err.msg} at offset {err.pos}") from None
    except (ValueError, RecursionError) as err:
        raise bad_request(f"JSON Parse error: {str(err)[:200] or 'nested too deeply'}") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _string_value(value: Any, where: str) -> bytes:
    if _is_b64(value):
        encoded = value["b64"]
        if not isinstance(encoded, str):
            raise bad_request(f"{where}: 'b64' must be a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}: 'b64' is not valid base64") from None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise bad_request(f'{where}: expected a string or {{"b64": "..."}}, got {_describe(value)}')


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _strings(value: Any, rank: int, where: str) -> list:
    """Nested JSON strings → nested lists of bytes with exactly `rank` dimensions."""
    if rank == 0:
        if isinstance(value, list):
            raise bad_request(f"{where}: expected a single string value, got a list (wrong rank)")
        return _string_value(value, where)  # type: ignore[return-value]
    if not isinstance(value, list):
        raise bad_request(f"{where}: expected a list of rank {rank}, got {_describe(value)} (wrong rank)")
    return [_strings(item, rank - 1, f"{where}[{i}]") for i, item in enumerate(value)]


def _numbers(value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    leaf = _first_leaf(value)
    if _is_b64(leaf):
        raise bad_request(f'{where}: {{"b64": ...}} values are only accepted for string inputs')
    if isinstance(leaf, dict):
        raise bad_request(f"{where}: '{spec.name}' takes numbers, got an object")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.array(value)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise bad_request(f"{where}: ragged or malformed nested lists") from None
    kind = array.dtype.kind
    target = spec.dtype
    if target.kind in "iu":
        if kind == "b" or kind in "USO":
            raise bad_request(
                f"{where}: '{spec.name}' takes {target.name} integers, got non-numeric or out-of-range values"
            )
        if kind == "f":
            if np.isnan(array).any():
                raise bad_request(f"{where}: '{spec.name}' takes {target.name} integers, got NaN")
            raise bad_request(f"{where}: '{spec.name}' takes {target.name} integers, got non-integer numbers")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise bad_request(
                f"{where}: '{spec.name}' values must be within {info.min}..{info.max} ({target.name}), "
                f"got {array.min()}..{array.max()}"
            )
    elif target.kind == "f":
        if kind not in "iuf":
            raise bad_request(f"{where}: '{spec.name}' takes {target.name} numbers, got non-numeric values")
    else:
        if kind not in "iufb":
            raise bad_request(f"{where}: '{spec.name}' takes {target.name} values, got non-numeric values")
    return array.astype(target)


def _first_leaf(value: Any) -> Any:
    for _ in range(64):
        if not isinstance(value, list) or not value:
            break
        value = value[0]
    return value


def _check_shape(array_shape: tuple[int, ...], spec: TensorSpec, where: str, batched: bool) -> None:
    expected = spec.shape if batched else spec.shape[1:]
    if len(array_shape) != len(expected):
        raise bad_request(
            f"{where}: '{spec.name}' must have rank {len(expected)} {_shape_text(expected)}, "
            f"got rank {len(array_shape)} {_shape_text(array_shape)}"
        )
    for got, want in zip(array_shape, expected, strict=True):
        if want is not None and got != want:
            raise bad_request(
                f"{where}: '{spec.name}' must have shape {_shape_text(expected)}, got {_shape_text(array_shape)}"
            )


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("N" if dim is None else str(dim) for dim in shape) + "]"


def _tensor(value: Any, spec: TensorSpec, where: str, batched: bool) -> np.ndarray:
    """One input's JSON value → a numpy array of the input's dtype and shape."""
    rank = len(spec.shape) - (0 if batched else 1)
    if spec.is_string:
        nested = _strings(value, rank, where)
        array = np.empty(_nested_shape(nested, rank, where), dtype=object)
        if array.ndim == 0:
            array[()] = nested
        else:
            _fill(array, nested)
    else:
        array = _numbers(value, spec, where)
    _check_shape(array.shape, spec, where, batched)
    return array


def _nested_shape(nested: Any, rank: int, where: str) -> tuple[int, ...]:
    shape = []
    level = nested
    for _ in range(rank):
        shape.append(len(level) if level is not None else 0)
        level = level[0] if level else None
    _check_rectangular(nested, tuple(shape), where)
    return tuple(shape)


def _check_rectangular(nested: Any, shape: tuple[int, ...], where: str) -> None:
    if not shape:
        return
    if len(nested) != shape[0]:
        raise bad_request(f"{where}: ragged nested lists")
    for item in nested:
        _check_rectangular(item, shape[1:], where)


def _fill(array: np.ndarray, nested: list) -> None:
    if array.ndim == 1:
        for i, item in enumerate(nested):
            array[i] = item
    else:
        for i, item in enumerate(nested):
            _fill(array[i], item)


def _split_named(value: Any, signature: Signature, where: str) -> dict[str, Any]:
    """A JSON value → {input name: value}: named inputs as an object, or one unnamed input."""
    names = list(signature.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise bad_request(
                f"{where}: unknown input '{unknown[0]}' for signature '{signature.name}' (inputs: {', '.join(names)})"
            )
        missing = [name for name in names if name not in value]
        if missing:
            raise bad_request(f"{where}: missing input '{missing[0]}' for signature '{signature.name}'")
        return dict(value)
    if len(names) != 1:
        raise bad_request(f"{where}: signature '{signature.name}' has several inputs: name them ({', '.join(names)})")
    return {names[0]: value}


def decode_predict(payload: Any, servable: Servable, max_instances: int, max_image_pixels: int) -> PredictRequest:
    """A parsed JSON body → validated numpy inputs for one signature, as TF Serving reads it."""
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object with 'instances' or 'inputs'")
    name = payload.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise bad_request("'signature_name' must be a string")
    name = name or "serving_default"
    signature = servable.signatures.get(name)
    if signature is None:
        raise bad_request(f'Serving signature name: "{name}" not found in signature def')
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances and has_inputs:
        raise bad_request("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists")
    if not has_instances and not has_inputs:
        raise bad_request("Missing 'inputs' or 'instances' key")

    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise bad_request("'instances' must be a list")
        if not instances:
            raise bad_request("'instances' is empty: send at least one instance")
        if len(instances) > max_instances:
            raise bad_request(f"{len(instances)} instances exceed the limit of {max_instances} per request")
        per_input: dict[str, list] = {key: [] for key in signature.inputs}
        for i, instance in enumerate(instances):
            for key, value in _split_named(instance, signature, f"instances[{i}]").items():
                per_input[key].append(_tensor(value, signature.inputs[key], f"instances[{i}]", batched=False))
        inputs = {key: np.stack(values) for key, values in per_input.items()}
    else:
        named = _split_named(payload["inputs"], signature, "inputs")
        inputs = {key: _tensor(value, signature.inputs[key], "inputs", batched=True) for key, value in named.items()}

    sizes = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
    if len(sizes) != 1:
        raise bad_request("all inputs must have the same batch size (first dimension)")
    size = sizes.pop()
    if size == 0:
        raise bad_request("the batch is empty: send at least one instance")
    if size > max_instances:
        raise bad_request(f"{size} instances exceed the limit of {max_instances} per request")
    for key, spec in signature.inputs.items():
        if spec.is_string:  # the served model's string inputs are encoded images
            check_images(inputs[key], "instances" if has_instances else "inputs", max_image_pixels)
    return PredictRequest(signature, inputs, size, has_instances)


def check_images(values: np.ndarray, where: str, max_pixels: int) -> None:
    """Refuses bytes that are no supported image, or an image too large to decode, before
    TensorFlow sees them. Reads headers only: no pixel is decoded here."""
    from PIL import Image

    for i, data in enumerate(values.ravel()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as image:
                    fmt, (width, height) = image.format, image.size
        except Exception:  # PIL raises many kinds for "not an image"
            raise bad_request(f"{where}[{i}]: not a decodable image (send JPEG, PNG, GIF, BMP or WebP bytes)") from None
        if fmt not in IMAGE_FORMATS:
            raise bad_request(f"{where}[{i}]: {fmt} images are not supported (send JPEG, PNG, GIF, BMP or WebP)")
        if width * height > max_pixels or width == 0 or height == 0:
            raise bad_request(
                f"{where}[{i}]: image of {width}x{height} pixels is over the limit of {max_pixels} pixels"
            )


# --- response encoding -------------------------------------------------------------------


def _json_values(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":

        def text(value: bytes) -> Any:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode("ascii")}

        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype.kind == "f":
        # float32 printed with its shortest round-trip digits, as TF Serving prints it
        if array.dtype == np.float32:
            flat = [float(str(v)) if math.isfinite(v) else None for v in array.ravel()]
            return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
        return np.where(np.isfinite(array), array, None).tolist() if array.ndim else array.item()
    return array.tolist()


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    values = {name: _json_values(array) for name, array in sorted(outputs.items())}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    count = len(next(iter(values.values())))
    return {"predictions": [{name: value[i] for name, value in values.items()} for i in range(count)]}


# --- the HTTP app ------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    model_name: str
    base_path: Path
    poll_seconds: float
    max_body_bytes: int
    max_instances: int
    max_batch: int
    max_image_pixels: int
    threads: int


class Metrics:
    def __init__(self, model_name: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they only add noise here
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "HTTP requests answered", ["api", "code"], registry=self.registry)
        self.errors = Counter(
            "serving_request_errors",
            "HTTP requests answered with an error (4xx/5xx)",
            ["api", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "Time from request to response",
            ["api"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=self.registry,
        )
        self.instances = Counter("serving_predict_instances", "Instances (images) predicted", registry=self.registry)
        self.batch = Histogram(
            "serving_batch_size",
            "Instances per signature call (merged requests)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.version = Gauge(
            "serving_model_version", "Model version being served (0: none)", ["model"], registry=self.registry
        )
        self.loads = Counter(
            "serving_model_loads", "Version loads by outcome", ["model", "outcome"], registry=self.registry
        )
        self.model_name = model_name
        self.version.labels(model_name).set(0)

    def changed(self, servable: Servable | None) -> None:
        if servable is None:
            self.loads.labels(self.model_name, "failure").inc()
        else:
            self.loads.labels(self.model_name, "success").inc()
            self.version.labels(self.model_name).set(servable.version)

    def observe(self, api: str, code: int, seconds: float) -> None:
        self.requests.labels(api, str(code)).inc()
        if code >= 400:
            self.errors.labels(api, str(code)).inc()
        self.latency.labels(api).observe(seconds)


def create_app(settings: Settings):
    """The ASGI app: TF Serving's REST paths, answered with JSON."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route

    metrics = Metrics(settings.model_name)
    manager = ModelManager(settings.model_name, settings.base_path, settings.poll_seconds, metrics.changed)
    batcher: Batcher | None = None

    def json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return Response(body.encode("utf-8"), status, headers=headers, media_type="application/json")

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise bad_request("Content-Length is not a number") from None
            if length > DRAIN_LIMIT_BYTES:
                raise ApiError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                if size > DRAIN_LIMIT_BYTES:
                    break
                chunks = []  # keep reading (and dropping) so the client gets the 413
                continue
            chunks.append(chunk)
        if size > limit:
            raise ApiError(413, f"request body of {size} bytes exceeds the limit of {limit} bytes")
        return b"".join(chunks)

    async def predict(request: Request, model: str, version: int | None, method: str) -> Response:
        if model != settings.model_name:
            spec = f"Latest({model})" if version is None else f"Specific({model}, {version})"
            raise ApiError(404, f"Servable not found for request: {spec}")
        body = await read_body(request)
        servable = manager.acquire(version)
        try:
            if method != "predict":
                raise bad_request(
                    f"the model's signatures are {PREDICT_METHOD} signatures: use :predict, not :{method}"
                )

            def decode() -> PredictRequest:
                return decode_predict(parse_json(body), servable, settings.max_instances, settings.max_image_pixels)

            decoded = decode() if len(body) <= INLINE_PARSE_BYTES else await run_in_threadpool(decode)
            assert batcher is not None
            future = batcher.submit(servable, decoded.signature, decoded.inputs, decoded.size)
            outputs = await asyncio.wrap_future(future)
        finally:
            servable.release()
        metrics.instances.inc(decoded.size)
        if decoded.size <= 64:
            return json_response(encode_predict(outputs, decoded.row_format))
        return json_response(await run_in_threadpool(encode_predict, outputs, decoded.row_format))

    def metadata(model: str, version: int | None) -> Response:
        if model != settings.model_name:
            raise ApiError(404, f"Servable not found for request: Latest({model})")
        servable = manager.acquire(version)
        try:
            return json_response(
                {
                    "model_spec": {"name": model, "signature_name": "", "version": str(servable.version)},
                    "metadata": servable.metadata,
                }
            )
        finally:
            servable.release()

    def status(model: str | None, version: int | None) -> Response:
        if not model:
            raise bad_request("Missing model name in request.")
        if model != settings.model_name:
            raise ApiError(404, f"Could not find any versions of model {model}")
        return json_response(manager.status(version))

    async def dispatch(request: Request) -> Response:
        started = time.perf_counter()
        path, method = request.url.path, request.method
        api = "other"
        try:
            if path == METRICS_PATH and method == "GET":
                api = "metrics"
                response = Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
            elif method == "POST" and (match := PREDICT_RE.fullmatch(path)):
                api = "predict"
                response = await predict(request, match[1], _version(match[2]), match[3].lower())
            elif method == "GET" and (match := METADATA_RE.fullmatch(path)):
                api = "metadata"
                response = metadata(match[1], _version(match[2]))
            elif method == "GET" and (match := STATUS_RE.fullmatch(path)):
                api = "status"
                response = status(match[1], _version(match[2]))
            elif path.lower().startswith("/v1/"):
                raise bad_request(f"Malformed request: {method} {path}")
            else:
                raise ApiError(404, f"not found: {method} {path}")
        except ApiError as err:
            response = json_response(
                {"error": err.message}, err.status, {"connection": "close"} if err.status == 413 else None
            )
        except ClientDisconnect:
            response = Response(status_code=499)
        except Exception as err:  # a server fault: logged with its trace, answered in one line
            log.exception("%s %s failed", method, path)
            response = json_response({"error": f"internal error: {short_error(err)}"}, 500)
        metrics.observe(api, response.status_code, time.perf_counter() - started)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal batcher
        batcher = Batcher(settings.threads, settings.max_batch, metrics.batch.observe)
        manager.start()
        try:
            yield
        finally:
            manager.stop()
            batcher.close()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=methods)], lifespan=lifespan)
    app.state.manager = manager
    app.state.metrics = metrics
    return app


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    version = int(text)
    if version > 2**63 - 1:
        raise bad_request(f"Failed to convert version: {text} to numeric.")
    return version


# --- command line ------------------------------------------------------------------------


def build_parser():
    p = parser("Serve the promoted model with TF Serving's REST API (predict, status, metadata, metrics).")
    p.add_argument(
        "--model-base-path", type=Path, required=True, help="folder of numeric version folders (<work>/models/fmnist)"
    )
    p.add_argument("--model-name", default=MODEL_NAME, help="the model name in the URL paths")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", type=port_number, default=8501, help="port to listen on")
    p.add_argument(
        "--poll-seconds", type=positive_float, default=1.0, help="how often to look for a new version on disk"
    )
    p.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies are refused with 413",
    )
    p.add_argument(
        "--max-instances",
        type=positive_int,
        default=DEFAULT_MAX_INSTANCES,
        help="most instances (images) in one request",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=DEFAULT_MAX_BATCH,
        help="most instances merged into one signature call across waiting requests",
    )
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="largest image (width x height) accepted as image_bytes",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        help="threads running signature calls (TF's own pools are sized from the CPUs)",
    )
    return p


def check_can_listen(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as err:
        raise JobError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model_base_path.is_dir():
        raise JobError(
            f"model base path {args.model_base_path} is not a folder: promote a model first "
            f"(make local), or point --model-base-path at <work>/models/{args.model_name}"
        )
    check_can_listen(args.host, args.port)  # before the slow TensorFlow import
    import uvicorn

    from jobs.common import configure_threads

    threads = configure_threads()
    log.info("TensorFlow uses %d CPU threads", threads)
    settings = Settings(
        model_name=args.model_name,
        base_path=args.model_base_path.resolve(),
        poll_seconds=args.poll_seconds,
        max_body_bytes=args.max_body_bytes,
        max_instances=args.max_instances,
        max_batch=args.max_batch,
        max_image_pixels=args.max_image_pixels,
        threads=args.threads,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = uvicorn.Server(config)
    log.info("serving %s from %s on http://%s:%d", args.model_name, settings.base_path, args.host, args.port)
    try:
        asyncio.run(server.serve())
    except (OSError, SystemExit) as err:  # uvicorn exits when it cannot bind
        reason = getattr(err, "strerror", None) or "see the log above"
        raise JobError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    if not server.started:
        raise JobError(f"the server did not start on {args.host}:{args.port} (see the log above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
