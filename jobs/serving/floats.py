"""Floats as TF Serving writes them, a whole array at a time.

TF Serving 2.20 (`util/json_tensor.cc`, `WriteDecimal`) writes a float with 6 significant
digits (`absl::StrCat`, printf's `%g`); when those do not read back as the same float it
writes `max_digits10` of them (9 for float32, 17 for float64); NaN and the infinities are
written as the bare words `NaN`, `Infinity` and `-Infinity`. So 0.000016223428f is
`1.62234e-05` when that reads back, else `1.62234282e-05`, never Python's shortest form.

Formatting each value in Python would cost a call per number. Here the decimal is found for
the whole array with numpy: scale each value by a power of ten to 6 (then 9) integer digits,
round half to even (as printf rounds an exact tie), scale back, and check that it reads back as
the original float. The result is a float64 array whose shortest form (what orjson writes) is
exactly that decimal: a decimal of at most 15 digits survives the trip through a double. Only
values too small or too large for exact powers of ten (below 1e-14, from 1e28) are formatted
one by one. Arrays with NaN or an infinity become nested lists with those words as raw JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

# 10**k is exact in a double up to k = 22, so x * 10**k and x / 10**k round only once.
_MAX_EXACT_POWER = 22
_POWERS = 10.0 ** np.arange(_MAX_EXACT_POWER + 1)
NON_FINITE = {
    "nan": orjson.Fragment(b"NaN"),
    "inf": orjson.Fragment(b"Infinity"),
    "-inf": orjson.Fragment(b"-Infinity"),
}


def _rounded(values: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """`values` (float64, finite, non-zero) rounded to `digits` significant digits, and a mask
    of those whose power of ten is out of the exact range (to be formatted one by one).

    With k = digits - 1 - exponent, a value is multiplied by 10**k (k >= 0) or divided by
    10**-k, and the rounded whole number scaled back the other way: one of the two factors is
    1, so each step rounds once."""
    shift = (digits - 1) - np.floor(np.log10(np.abs(values)))
    odd = np.abs(shift) > _MAX_EXACT_POWER
    k = np.clip(shift, -_MAX_EXACT_POWER, _MAX_EXACT_POWER).astype(np.int64)
    up, down = _POWERS[np.maximum(k, 0)], _POWERS[np.maximum(-k, 0)]
    return np.rint(values * up / down) * down / up, odd


def _one(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _decimals(values: np.ndarray, digits: int) -> np.ndarray:
    result, odd = _rounded(values, digits)
    if odd.any():
        result[odd] = [_one(v, digits) for v in values[odd]]
    return result


def tf_serving_floats(array: np.ndarray) -> np.ndarray:
    """A float array → float64 values whose shortest text is what TF Serving writes (finite
    values only: see `json_ready` for NaN and infinities)."""
    array = np.asarray(array)
    values = array.astype(np.float64).reshape(-1)
    zero = values == 0
    safe = np.where(zero, 1.0, values)  # zeros (±0.0) are kept as they are below
    result = _decimals(safe, 6)
    if array.dtype == np.float32:
        trips = result.astype(np.float32) == safe.astype(np.float32)
        if not trips.all():
            result = np.where(trips, result, _decimals(safe, 9))
    else:
        result = np.where(result == safe, result, safe)  # 17 digits read back: the value itself
    return np.where(zero, values, result).reshape(array.shape)


def json_ready(array: np.ndarray) -> Any:
    """A float array as orjson should write it: a float64 array, or nested lists when it holds
    NaN or an infinity (written as TF Serving writes them)."""
    array = np.asarray(array)
    finite = np.isfinite(array)
    if finite.all():
        values = tf_serving_floats(array)
        return float(values) if values.ndim == 0 else values
    if array.ndim == 0:
        return NON_FINITE[str(float(array))]
    values = np.where(finite, array, 0).astype(array.dtype)
    shown = tf_serving_floats(values).astype(object)
    for index in zip(*np.nonzero(~finite), strict=True):
        shown[index] = NON_FINITE[str(float(array[index]))]
    return shown.tolist()
