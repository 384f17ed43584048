"""One loaded SavedModel version, run as TF Serving runs it: the MetaGraph tagged `serve`
loaded into a TensorFlow session, each signature called by feeding its input tensors and
fetching its output tensors by name (servables/tensorflow/predict_util.cc, 2.20.0).

So any SavedModel TF Serving serves is served here, TF1 (`SavedModelBuilder`) and TF2
(`tf.saved_model.save`) alike, with the same signatures and tensor names, and with the same
leniency: the signature's declared shapes are not checked against a request (a TF1 signature
may feed an intermediate tensor, and shapes are the model's business); what the model cannot
take fails inside it with TensorFlow's own error. A signature is called through a callable
made once per signature (`Session._make_callable_from_options`, which feeds without the
Python client's shape check, as TF Serving's C++ `Session::Run` does).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np

from jobs.core import tf_errors
from jobs.serving import metadata
from jobs.serving.errors import CODES, INTERNAL, ApiError, code_name

TAG = "serve"
INIT_OP = "__saved_model_init_op"

# The types TF Serving's JSON carries (util/json_tensor.cc) → numpy dtypes; any other type of
# input or output is refused there, and here.
DTYPES = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT8": np.dtype(np.int8),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_INT64": np.dtype(np.int64),
    "DT_UINT32": np.dtype(np.uint32),
    "DT_UINT64": np.dtype(np.uint64),
    "DT_BOOL": np.dtype(np.bool_),
    "DT_STRING": np.dtype(object),
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: its key, the graph tensor behind it, its DataType
    name (`DT_FLOAT`...) and declared shape (None: unknown rank; -1: unknown size)."""

    key: str
    tensor: str
    dtype: str
    shape: tuple[int, ...] | None

    @property
    def type_name(self) -> str:
        """TensorFlow's DataTypeString: `float`, `string`, `uint8`..."""
        return self.dtype[3:].lower()

    @property
    def batched(self) -> bool:
        """Declared with a leading dimension of any size (the batch)."""
        return bool(self.shape) and self.shape[0] == -1


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    text: str = ""  # the SignatureDef in protobuf text format (TF Serving's DebugString)

    @property
    def batchable(self) -> bool:
        """Requests may be merged into one call (and one split): every input and output is
        declared with a leading batch dimension."""
        infos = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(info.batched for info in infos)


class Servable:
    """One loaded version. `inflight` counts the requests that hold it."""

    def __init__(
        self,
        version: int,
        path: Path,
        session: Any,
        signatures: dict[str, Signature],
        metadata: dict,
        strict_ranks: bool = False,
    ):
        self.version = version
        self.path = path
        self.session = session
        self.signatures = signatures
        self.metadata = metadata  # the signature defs as TF Serving's metadata call prints them
        self.strict_ranks = strict_ranks  # inputs must have their declared rank (layout_sensitive)
        self._callables: dict[str, Any] = {}
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

    def callable(self, signature: Signature):
        with self._lock:
            found = self._callables.get(signature.name)
            if found is None:
                found = self._callables[signature.name] = _make_callable(self.session, signature)
            return found

    def close(self) -> None:
        with self._lock:
            self._callables.clear()
        self.session.close()


def _info(key: str, proto) -> TensorInfo:
    from tensorflow.core.framework import types_pb2

    shape = proto.tensor_shape
    dims = None if shape.unknown_rank else tuple(dim.size for dim in shape.dim)
    return TensorInfo(key, proto.name, types_pb2.DataType.Name(proto.dtype), dims)


def signatures_of(meta_graph) -> dict[str, Signature]:
    from google.protobuf import text_format

    found = {}
    for name, proto in meta_graph.signature_def.items():
        inputs = {key: _info(key, value) for key, value in sorted(proto.inputs.items())}
        outputs = {key: _info(key, value) for key, value in sorted(proto.outputs.items())}
        found[name] = Signature(name, proto.method_name, inputs, outputs, text_format.MessageToString(proto))
    return found


def layout_sensitive(meta_graph) -> bool:
    """Whether the graph (or a function in it) has an op whose definition has a `data_format`
    (convolutions, pooling, batch norm, bias add): their kernels index dimensions by layout, and
    under oneDNN one given a tensor of another rank aborts the process instead of failing the
    call. (The attribute itself may be absent: a SavedModel strips attributes at their default.)"""
    from tensorflow.python.framework import op_def_registry

    graph = meta_graph.graph_def
    kinds = {node.op for node in graph.node}
    kinds.update(node.op for function in graph.library.function for node in function.node_def)
    for kind in kinds:
        definition = op_def_registry.get(kind)
        if definition is not None and any(attr.name == "data_format" for attr in definition.attr):
            return True
    return False


def _make_callable(session, signature: Signature):
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions(
        feed=[info.tensor for info in signature.inputs.values()],
        fetch=[info.tensor for info in signature.outputs.values()],
    )
    return session._make_callable_from_options(options)


def session_config():
    """Thread pools as the process was told (jobs.cpus sets TensorFlow's), not the host's."""
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        allow_soft_placement=True,
    )


def load(path: Path, version: int) -> Servable:
    """Loads the `serve` MetaGraph of the SavedModel at `path` into a session of its own and
    makes a callable per signature, so that the first request costs what the others do."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config())
    try:
        with graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [TAG], str(path))
        signatures = signatures_of(meta_graph)
        servable = Servable(
            version, path, session, signatures, metadata.signature_defs(meta_graph), layout_sensitive(meta_graph)
        )
        for signature in signatures.values():
            if signature.inputs and signature.outputs:
                servable.callable(signature)
    except BaseException:
        session.close()
        raise
    return servable


def call(servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a signature: numpy inputs by key → numpy outputs by key."""
    run = servable.callable(signature)
    results = run(*(inputs[key] for key in signature.inputs))
    return {key: _array(value) for key, value in zip(signature.outputs, results, strict=True)}


def _array(value) -> np.ndarray:
    """A fetched value as an array (a scalar string comes back as bytes, a number as a scalar)."""
    if isinstance(value, bytes):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    return np.asarray(value)


def error_code(err: BaseException) -> str:
    """The canonical code of a failure, as TF Serving's status shows it."""
    import tensorflow as tf

    code = getattr(err, "code", None)
    if isinstance(code, str) and code in CODES:
        return code
    if isinstance(err, tf.errors.OpError):
        return code_name(err.error_code)
    if isinstance(err, FileNotFoundError | NotADirectoryError):
        return "NOT_FOUND"
    if isinstance(err, RuntimeError) and "could not be found in SavedModel" in str(err):
        return "NOT_FOUND"
    return "UNKNOWN"


def as_api_error(err: BaseException) -> ApiError:
    """A signature call's failure as TF Serving answers it: a TensorFlow error keeps its code
    and its message (in one line, without graph node names); anything else is this server's
    fault, an internal error (the caller logs it)."""
    import tensorflow as tf

    if isinstance(err, tf.errors.OpError):
        return ApiError(code_name(err.error_code), tf_errors.reason(err))
    return ApiError("INTERNAL", INTERNAL)
