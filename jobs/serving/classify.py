"""What a classify or regress call asks of a signature and makes of its outputs, as TF Serving
2.20 does (servables/tensorflow/classifier.cc, regressor.cc), with their error messages.

A classification signature has one input, `inputs` (the serialized tf.Examples), and one or two
outputs among `classes` (strings [batch, classes]) and `scores` (floats [batch, classes]); a
regression signature has the input `inputs` and the output `outputs` (floats [batch] or
[batch, 1]). The method name is not checked (TF Serving checks it only with
--enable_signature_method_name_check, off by default), so a TF2 SavedModel, whose signatures
are all `predict`, classifies and regresses too.
"""

from __future__ import annotations

import numpy as np

from jobs.serving.errors import invalid_argument
from jobs.serving.request import DEFAULT_SIGNATURE
from jobs.serving.servable import Signature

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


def _named(signatures: dict[str, Signature], name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    if key not in signatures:
        raise invalid_argument(f"No signature was found with the name: {key}")
    return signatures[key]


def _one_input(signature: Signature, what: str) -> None:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No {what} inputs found in SignatureDef: {signature.text}")


def classification_signature(signatures: dict[str, Signature], name: str) -> Signature:
    signature = _named(signatures, name)
    _one_input(signature, "classification")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSES not in signature.outputs and SCORES not in signature.outputs:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSES}" or '
            f'"{SCORES}". Signature was: {signature.text}'
        )
    return signature


def regression_signature(signatures: dict[str, Signature], name: str) -> Signature:
    signature = _named(signatures, name)
    _one_input(signature, "regression")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.text}")
    return signature


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(dim) for dim in array.shape) + "]"


def _checked_matrix(array: np.ndarray | None, what: str, kind: str, count: int) -> None:
    if array is None:
        return
    if array.ndim != 2:
        raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
    dtype_ok = array.dtype == object if kind == "DT_STRING" else array.dtype == np.float32
    if not dtype_ok:
        raise invalid_argument(f"Expected {what} Tensor of {kind}. Got: {_dtype_name(array)}")
    if array.shape[0] != count:
        raise invalid_argument(f"Expected {what} output batch size of {count}. Got: {array.shape[0]}")


def classifications(outputs: dict[str, np.ndarray], count: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) [examples, classes] from a classification signature's outputs: labels
    as bytes ('' without `classes`), scores as float32 (0 without `scores`)."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    _checked_matrix(classes, "classes", "DT_STRING", count)
    _checked_matrix(scores, "scores", "DT_FLOAT", count)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]
    if classes is None:
        classes = np.full((count, width), b"", dtype=object)
    if scores is None:
        scores = np.zeros((count, width), np.float32)
    return classes, scores


def regressions(outputs: dict[str, np.ndarray], count: int) -> np.ndarray:
    """The regression values [examples] (float32) from a regression signature's outputs."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape(values)}"
        )
    if values.shape[0] != count:
        raise invalid_argument(f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(values)}")
    return values.reshape(count)


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype == object:
        return "DT_STRING"
    names = {"float64": "DOUBLE", "bool": "BOOL"}
    return "DT_" + names.get(array.dtype.name, array.dtype.name.upper())
