"""One JSON value → the numpy array of a signature input's type, as TF Serving converts it
(util/json_tensor.cc, `GetDenseTensorShape`, `FillTensorProto`, `AddValueToTensor`, 2.20.0),
with its error messages.

A tensor's shape is that of its nested lists (the first element decides each level's size, every
other list must match); its values must be of the input's type: numbers for floats, integers in
range for integer types (narrow ones wrap, as TF Serving's cast does), `true`/`false` for
booleans, strings or `{"b64": ...}` for strings. Nested lists of numbers are converted by numpy in
one go and strings in a flat list one by one; whatever that fast path does not take (ragged
lists, mixed types, booleans among numbers) goes through the exact walk, which is what gives TF
Serving's message. Pure: no server machinery.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from typing import Any

import numpy as np

from jobs.serving.errors import ApiError, invalid_argument, unimplemented
from jobs.serving.jsonbody import debug_text
from jobs.serving.servable import DTYPES, TensorInfo

INT_RANGES = {
    "DT_INT32": (-(2**31), 2**31),
    "DT_INT16": (-(2**31), 2**31),  # taken as int32, then cast
    "DT_INT8": (-(2**31), 2**31),
    "DT_UINT8": (-(2**31), 2**31),
    "DT_INT64": (-(2**63), 2**63),
    "DT_UINT32": (0, 2**32),
    "DT_UINT64": (0, 2**64),
}
FLOATS = ("DT_FLOAT", "DT_DOUBLE")


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def tensor(value: Any, info: TensorInfo, booleans: bool = True) -> np.ndarray:
    """A JSON value → the array of `info`'s type, or TF Serving's error for it."""
    fast = fast_tensor(value, info, booleans)
    return fast if fast is not None else exact_tensor(value, info)


def fast_tensor(value: Any, info: TensorInfo, booleans: bool) -> np.ndarray | None:
    """The common cases, whole: a flat list of strings, nested lists of numbers. None: not one
    of those (the exact walk decides, and explains)."""
    if info.dtype == "DT_STRING":
        return _flat_strings(value)
    target = DTYPES.get(info.dtype)
    if target is None or (booleans and info.dtype != "DT_BOOL"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    kind = array.dtype.kind
    if info.dtype in FLOATS:
        if kind not in "iuf":
            return None
        with np.errstate(over="ignore"):  # beyond float32: infinity, as TF Serving's cast gives
            return array.astype(target)
    if info.dtype == "DT_BOOL":
        return array if kind == "b" else None
    if kind not in "iu":
        return None
    low, high = INT_RANGES[info.dtype]
    if array.size and (int(array.min()) < low or int(array.max()) >= high):
        return None
    return array.astype(target)


def _flat_strings(value: Any) -> np.ndarray | None:
    if not isinstance(value, list):
        return None
    out = np.empty(len(value), dtype=object)
    for i, item in enumerate(value):
        if type(item) is str:
            out[i] = item.encode("utf-8", "surrogateescape")
        elif type(item) is dict and len(item) == 1 and type(item.get("b64")) is str:
            out[i] = b64_bytes(item["b64"])
        else:
            return None
    return out


def exact_tensor(value: Any, info: TensorInfo) -> np.ndarray:
    """The walk TF Serving does (GetDenseTensorShape, FillTensorProto): the shape from the first
    element of each level, then every value checked where it is."""
    shape = []
    level = value
    while isinstance(level, list):
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    flat: list = []
    _fill(value, 0, shape, info, flat)
    if info.dtype == "DT_STRING":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    elif info.dtype in INT_RANGES and info.dtype != "DT_UINT64":
        array = np.array(flat, dtype=np.int64).astype(DTYPES[info.dtype])
    elif info.dtype in FLOATS:
        with np.errstate(over="ignore"):
            array = np.array([float(v) for v in flat], dtype=np.float64).astype(DTYPES[info.dtype])
    else:
        array = np.array(flat, dtype=DTYPES[info.dtype])
    return array.reshape(shape)


def _fill(value: Any, level: int, shape: list[int], info: TensorInfo, flat: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_text(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        flat.append(_leaf(value, info))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, info, flat)


def _leaf(value: Any, info: TensorInfo) -> Any:
    dtype = info.dtype
    if isinstance(value, dict):
        if dtype == "DT_STRING":
            if not is_b64(value):
                raise invalid_argument(f"JSON Value: {debug_text(value)} not formatted correctly for base64 data")
            return b64_bytes(value["b64"])
        raise type_error(value, info)
    if dtype not in DTYPES:
        raise unimplemented(f"Conversion of JSON Value: {debug_text(value)} to type: {info.type_name}")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in FLOATS:
        ok = number
    elif dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        ok = number and isinstance(value, int) and low <= value < high
    elif dtype == "DT_BOOL":
        ok = isinstance(value, bool)
    else:  # DT_STRING
        ok = isinstance(value, str)
        if ok:
            return value.encode("utf-8", "surrogateescape")
    if not ok:
        raise type_error(value, info)
    return value


def type_error(value: Any, info: TensorInfo) -> ApiError:
    return invalid_argument(
        f"JSON Value: {debug_text(value)} Type: {json_type(value)} is not of expected type: {info.type_name}"
    )


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def b64_bytes(text: str) -> bytes:
    """`{"b64": text}`'s bytes (padding optional, as absl's decoder takes it)."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None
