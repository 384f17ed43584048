"""Outputs → TF Serving's answers (util/json_tensor.cc, 2.20.0): predict's `{"predictions": ...}`
for the row format (one object per instance when there are several outputs, each output split
along its first dimension, which must be the same for all) or `{"outputs": ...}` for the
columnar one; classify's `{"results": [[[label, score], ...], ...]}`; regress's
`{"results": [value, ...]}`; errors as `{"error": "..."}`.

Floats are written as TF Serving writes them (floats.py). A string output whose name ends in
`_bytes` is written as `{"b64": ...}`, any other as text. Output types TF Serving cannot write
(half, uint16, complex...) are its error here too.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from jobs.serving import floats, jsonbody
from jobs.serving.errors import invalid_argument

BYTES_SUFFIX = "_bytes"
WRITABLE = {"float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "bool", "object"}
TF_NAMES = {"float16": "half", "float32": "float", "float64": "double", "object": "string", "bool": "bool"}


def _b64(value: bytes) -> dict:
    return {"b64": base64.b64encode(value).decode("ascii")}


def _text(value: bytes) -> Any:
    """Text, or `{"b64": ...}` for bytes that are not UTF-8 (TF Serving writes them raw, which
    is not JSON)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(value)


def _strings(array: np.ndarray, as_bytes: bool) -> Any:
    write = _b64 if as_bytes else _text
    if array.ndim == 0:
        return write(array[()])
    if array.ndim == 1:
        return [write(value) for value in array]
    return [_strings(row, as_bytes) for row in array]


_WRITABLE_TYPES = frozenset(np.dtype(name) for name in WRITABLE)  # a dtype's .name is slow to compute


def _check_writable(array: np.ndarray) -> None:
    if array.dtype not in _WRITABLE_TYPES and array.dtype.name not in WRITABLE:
        kind = array.dtype.name
        raise invalid_argument(f"Failed to write JSON value for tensor type: {TF_NAMES.get(kind, kind)}")


def _values(name: str, array: np.ndarray) -> Any:
    """One output, as orjson should write it."""
    _check_writable(array)
    if array.dtype == object:
        return _strings(array, name.endswith(BYTES_SUFFIX))
    if array.dtype.kind == "f":
        return floats.fragment(array)
    return np.ascontiguousarray(array) if array.ndim else array[()].item()


def _rows(name: str, array: np.ndarray) -> Any:
    """One output of rank 1 or more, row by row (indexable by instance)."""
    if array.dtype.kind == "f":
        _check_writable(array)
        return floats.row_fragments(array)
    return _values(name, array)


def predict_answer(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if not row_format:
        values = {name: _values(name, outputs[name]) for name in names}
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    if len(names) == 1:
        return {"predictions": _values(names[0], outputs[names[0]])}
    values = {name: _rows(name, outputs[name]) for name in names}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(batch)]}


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    return jsonbody.dumps(predict_answer(outputs, row_format))


def encode_classify(labels: np.ndarray, scores: np.ndarray) -> bytes:
    if not labels.shape[0]:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    texts = [[value.decode("utf-8", "replace") for value in row] for row in labels]
    shown = floats.value_fragments(scores)
    width = scores.shape[1]
    results = [
        [[label, shown[i * width + j]] for j, label in enumerate(row_labels)] for i, row_labels in enumerate(texts)
    ]
    return jsonbody.dumps({"results": results})


def encode_regress(values: np.ndarray) -> bytes:
    if not values.shape[0]:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return jsonbody.dumps({"results": floats.fragment(values)})


def encode_error(message: str) -> bytes:
    return jsonbody.dumps({"error": message})
