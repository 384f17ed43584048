"""One loaded SavedModel version: its signatures with their input and output specs, the
metadata TF Serving prints for it, and how a signature is called with numpy inputs."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype  # np.dtype(object) for strings
    shape: tuple[int | None, ...]  # None for an unknown dimension

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    function: Any  # a concrete function taking keyword tensors
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Servable:
    """One loaded version. `inflight` counts the requests that hold it."""

    def __init__(self, version: int, model: Any, signatures: dict[str, Signature], metadata: dict):
        self.version = version
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


def signature_metadata(path: Path) -> dict:
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
        from jobs.core import png
        from jobs.ingest.data import IMAGE_SHAPE

        return np.full(shape, png.encode(np.zeros(IMAGE_SHAPE, np.uint8)), dtype=object)
    return np.zeros(shape, spec.dtype)


def load(path: Path, version: int) -> Servable:
    """Loads a SavedModel version and runs each signature once, so that a version which
    cannot serve fails here rather than on a client's request."""
    import tensorflow as tf

    model = tf.saved_model.load(str(path))
    if not model.signatures:
        raise ValueError("the SavedModel has no serving signatures")
    signatures = {}
    for name, function in model.signatures.items():
        _, kwargs = function.structured_input_signature
        inputs = {key: _spec(key, spec) for key, spec in kwargs.items()}
        outputs = {key: _spec(key, spec) for key, spec in function.structured_outputs.items()}
        signature = Signature(name, function, inputs, outputs)
        call(signature, {k: _warmup_value(s) for k, s in inputs.items()})
        signatures[name] = signature
    return Servable(version, model, signatures, signature_metadata(path))


def call(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    tensors = {
        name: tf.constant(value.tolist() if value.dtype == object else value, dtype=tf.string)
        if signature.inputs[name].is_string
        else tf.constant(value)
        for name, value in inputs.items()
    }
    result = signature.function(**tensors)
    return {name: tensor.numpy() for name, tensor in result.items()}


def is_client_error(err: BaseException) -> bool:
    """A TensorFlow error caused by the input (TF Serving answers these with 400)."""
    import tensorflow as tf

    return isinstance(
        err, tf.errors.InvalidArgumentError | tf.errors.OutOfRangeError | tf.errors.FailedPreconditionError
    )


_CODE_NAMES = (
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


def error_code(err: BaseException) -> str:
    """TF Serving's name for an error's code, as model_version_status shows it."""
    import tensorflow as tf

    if isinstance(err, tf.errors.OpError):
        names = {getattr(tf.errors, name): name for name in _CODE_NAMES}
        return names.get(err.error_code, "UNKNOWN")
    if isinstance(err, FileNotFoundError | NotADirectoryError):
        return "NOT_FOUND"
    return "UNKNOWN"
