"""A version's warm-up, as TF Serving does it (servables/tensorflow/saved_model_warmup*.cc,
2.20.0): only when the SavedModel has `assets.extra/tf_serving_warmup_requests`, a TFRecord
file of `tensorflow.serving.PredictionLog`s (at most 1000), each of whose predict, classify
or regress requests is run once before the version is served. A version without the file is
served without a warm-up: nothing is guessed. A record that does not parse, a request that
fails, or more than 1000 records fail the version's load, as there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jobs.serving import classify
from jobs.serving.errors import ApiError, failed_precondition, invalid_argument, unimplemented
from jobs.serving.request import DEFAULT_SIGNATURE
from jobs.serving.servable import Servable, as_api_error, call

FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000


class WarmupError(Exception):
    """The warm-up failed: `code` and `message` as TF Serving's status would say them."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "OK", or the failure as TF Serving's status prints it
    records: int
    seconds: float


def write(model_dir: Path, requests: dict[str, dict[str, np.ndarray]]) -> Path:
    """Writes `model_dir`'s warm-up file: one predict request per signature (its inputs by
    key), which TF Serving and this server replay before serving the version."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    target = model_dir / FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for name, inputs in requests.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = name
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return target


def path_of(servable: Servable) -> Path:
    return servable.path / FILE


def run(servable: Servable, report: Callable[[Outcome], None] = lambda outcome: None) -> int:
    """Replays the warm-up file of `servable` (if any); the number of records, or WarmupError."""
    if not path_of(servable).is_file():
        return 0
    started, records = time.monotonic(), 0
    try:
        for record in _records(path_of(servable)):
            records += 1
            if records > MAX_RECORDS:
                raise WarmupError(
                    "INVALID_ARGUMENT",
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {FILE}",
                )
            _replay(servable, record)
    except WarmupError as err:
        report(Outcome(str(err), records, time.monotonic() - started))
        raise
    report(Outcome("OK", records, time.monotonic() - started))
    return records


def _records(path: Path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    try:
        for raw in tf.data.TFRecordDataset(str(path)):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(raw.numpy())
            except Exception:  # protobuf's DecodeError and friends
                raise WarmupError("INVALID_ARGUMENT", f"Failed to parse warmup record from {FILE}") from None
            yield log
    except tf.errors.DataLossError as err:
        raise WarmupError(
            "DATA_LOSS", f"{err.message.splitlines()[0]}. Please verify your warmup data is in TFRecord format."
        ) from None


def _replay(servable: Servable, log) -> None:
    kind = log.WhichOneof("log_type")
    try:
        if kind == "predict_log":
            _predict(servable, log.predict_log.request)
        elif kind in ("classify_log", "regress_log"):
            _classify_or_regress(servable, kind, getattr(log, kind).request)
        elif kind is not None:
            raise unimplemented(f"Unsupported log_type for warmup: {kind}")
    except ApiError as err:
        raise WarmupError(err.code, err.message) from None
    except Exception as err:  # the model's own failure, told as TF Serving tells it
        api = as_api_error(err)
        raise WarmupError(api.code, api.message) from None


def _predict(servable: Servable, request) -> None:
    import tensorflow as tf

    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(name)
    if signature is None:
        raise failed_precondition(f'Serving signature key "{name}" not found.')
    sent, wanted = set(request.inputs), set(signature.inputs)
    if sent != wanted:
        raise invalid_argument(f"input size does not match signature: {len(sent)}!={len(wanted)}")
    call(servable, signature, {key: tf.make_ndarray(request.inputs[key]) for key in signature.inputs})


def _classify_or_regress(servable: Servable, kind: str, request) -> None:
    name = request.model_spec.signature_name
    which = request.input.WhichOneof("kind")
    if which == "example_list":
        serialized = [e.SerializeToString() for e in request.input.example_list.examples]
    elif which == "example_list_with_context":
        part = request.input.example_list_with_context
        context = part.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in part.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    examples = np.array(serialized, dtype=object)
    if kind == "classify_log":
        signature = classify.classification_signature(servable.signatures, name)
        classify.classifications(call(servable, signature, {classify.INPUTS: examples}), len(examples))
    else:
        signature = classify.regression_signature(servable.signatures, name)
        classify.regressions(call(servable, signature, {classify.INPUTS: examples}), len(examples))
