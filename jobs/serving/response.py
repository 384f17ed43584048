"""Signature outputs → TF Serving's predict answer: `{"predictions": [...]}` for the row format
(one object per instance when there are several outputs), `{"outputs": ...}` for the columnar
format. Strings are text, or `{"b64": ...}` when not UTF-8; float32 prints with its shortest
round-trip digits as TF Serving prints it; NaN and infinity print as null."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from jobs.serving import jsonbody


def _strings(array: np.ndarray) -> Any:
    def text(value: bytes) -> Any:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}

    if array.ndim == 0:
        return text(array[()])
    if array.ndim == 1:
        return [text(value) for value in array]
    return [_strings(row) for row in array]


def _values(array: np.ndarray) -> Any:
    """What orjson can write: numpy numbers as they are, strings as lists of text."""
    if array.dtype == object or array.dtype.kind == "S":
        return _strings(array)
    if array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def predict_answer(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    values = {name: _values(array) for name, array in sorted(outputs.items())}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    count = len(next(iter(outputs.values())))
    return {"predictions": [{name: value[i] for name, value in values.items()} for i in range(count)]}


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    return jsonbody.dumps(predict_answer(outputs, row_format))


def encode_error(message: str) -> bytes:
    return jsonbody.dumps({"error": message})
