"""Floats as TF Serving writes them, a whole array at a time.

TF Serving 2.20 writes each float of an answer with `WriteDecimal` (`util/json_tensor.cc`):
the text of `absl::StrCat`, which is printf's `%g` (6 significant digits, correctly rounded,
ties to even: absl's `SixDigitsToBuffer`); when that text does not read back as the same value
(`absl::SimpleAtof` for a float32, `SimpleAtod` for a double), `%.9g` (float32) or `%.17g`
(double) instead; then `.0` after a text with neither `.` nor `e`. NaN and the infinities are
the bare words `NaN`, `Infinity` and `-Infinity`. So 0.5 is `0.5`, 3 is `3.0`, 999999 is
`999999.0`, 9000000 is `9e+06` and 0.0000162234282f is `1.62234282e-05`.

`text_of` is that rule for one value. An array is written with the same printf conversions
(Python's `%` formatting rounds as printf does), all of its values in one `%` call; numpy
decides for the whole array which of four conversions each value gets (`%.6g`, `%.6g.0`,
`%.9g`, `%.9g.0`; 17 for doubles): it rounds every value to 6 significant digits as a double
and checks that this reads back (for a float32, that the float32 nearest to it is the value);
`.0` goes after a whole number below 10^6 (10^9, 10^17 for the long forms: a float32 or double
that is not whole never rounds to a whole number at those digits). The few values where that
arithmetic could be off are written by `text_of` instead: the non-finite ones, those whose
scaled value is within 1e-9 of a rounding tie, those whose 6-digit double is within a few units
in the last place of halfway between two float32s (where reading the decimal through a double
could round twice), float32s below 2^-126, and doubles whose power of ten is not exact in a
double (below 1e-17 or from 1e28).
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np
import orjson

LONG_DIGITS = {np.dtype(np.float32): 9, np.dtype(np.float64): 17}
WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

_EXACT_POWER = 22  # 10**k is exact in a double up to here: one rounding per scaling
_POWERS = 10.0 ** np.arange(309)
_TIE = 1e-9  # a scaled value this close to a half may have been rounded to the other side
_FLOAT32_DROPPED = np.uint64((1 << 29) - 1)  # a double's mantissa bits a float32 does not keep
_FLOAT32_DROPPED_BITS = (1 << 29) - 1
_FLOAT32_HALF = 1 << 28
_MIDPOINT_WINDOW = 16  # units in the last place of the double that may be off
_FLOAT32_SMALLEST_NORMAL = 2.0**-126
_SPECIAL = 4  # conversion code: written by text_of


def _conversions(long_digits: int) -> tuple[str, ...]:
    return ("%.6g", "%.6g.0", f"%.{long_digits}g", f"%.{long_digits}g.0", "%s")


CONVERSIONS = {dtype: _conversions(digits) for dtype, digits in LONG_DIGITS.items()}


# -- one value: the rule itself ---------------------------------------------------------------


_SINGLE = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_BITS = struct.Struct("<Q")
_FLOAT32_ROUNDS_FINITE = 3.4e38  # below this a double rounds to a finite float32


def float32_of(text: str) -> float:
    """The float32 nearest to a decimal text (ties to even), as `absl::SimpleAtof` reads it:
    through a double, except where that would round twice (the double halfway between two
    float32s while the decimal is not)."""
    x = float(text)
    # The common case, in plain Python (this runs for every float of every answer): a normal
    # float32's range, and the double not halfway between two float32s.
    if (
        _FLOAT32_SMALLEST_NORMAL <= abs(x) < _FLOAT32_ROUNDS_FINITE
        and _BITS.unpack(_DOUBLE.pack(x))[0] & _FLOAT32_DROPPED_BITS != _FLOAT32_HALF
    ):
        return _SINGLE.unpack(_SINGLE.pack(x))[0]
    nearest = np.float32(x)
    if float(nearest) == x or not math.isfinite(nearest):
        return float(nearest)
    other = np.nextafter(nearest, np.float32(math.copysign(math.inf, x - float(nearest))))
    if float(nearest) + float(other) != 2 * x:
        return float(nearest)
    exact = Fraction(text)
    if exact == Fraction(x):
        return float(nearest)  # a true tie: the cast rounded it to even
    return float(max(nearest, other)) if exact > Fraction(x) else float(min(nearest, other))


def text_of(value: float, single: bool) -> str:
    """One value as TF Serving writes it; `single`: a float32 (else a double)."""
    if not math.isfinite(value):
        return WORDS[str(value)]
    text = f"{value:.6g}"
    back = float32_of(text) if single else float(text)
    if back != value:
        text = f"{value:.9g}" if single else f"{value:.17g}"
    return text if "." in text or "e" in text else text + ".0"


# -- a whole array ----------------------------------------------------------------------------

SMALL = 16  # values: up to this many, one at a time is faster than the array path


def _six_digits(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`magnitude` (positive, finite) rounded to 6 significant digits, as the nearest double
    when the scaling was exact; a mask of values near a rounding tie or misjudged in exponent;
    a mask of values whose scaling by a power of ten was not exact."""
    shift = 5 - np.floor(np.log10(magnitude)).astype(np.int64)
    inexact = np.abs(shift) > _EXACT_POWER
    shift = np.clip(shift, -308, 308)
    up, down = _POWERS[np.maximum(shift, 0)], _POWERS[np.maximum(-shift, 0)]
    scaled = magnitude * up / down
    whole = np.rint(scaled)
    doubtful = (scaled < 1e5) | (scaled >= 1e6) | (np.abs(scaled - np.floor(scaled) - 0.5) < _TIE)
    return whole * down / up, doubtful, inexact


def _near_float32_midpoint(values: np.ndarray) -> np.ndarray:
    """Doubles within a few units of halfway between two float32s, or in the float32s'
    subnormal range (where the test below does not hold)."""
    dropped = values.view(np.uint64) & _FLOAT32_DROPPED
    near = np.abs(dropped.astype(np.int64) - _FLOAT32_HALF) <= _MIDPOINT_WINDOW
    return near | (values < _FLOAT32_SMALLEST_NORMAL)


def codes(flat: np.ndarray) -> np.ndarray:
    """For each value of a 1-D float32 or float64 array, its conversion: 0 `%.6g`, 1 `%.6g.0`,
    2 the long form, 3 the long form with `.0`, 4 written by `text_of`."""
    single = flat.dtype == np.float32
    with np.errstate(invalid="ignore"):  # a signalling NaN's cast
        magnitude = np.abs(flat).astype(np.float64)
    finite = np.isfinite(magnitude)
    plain = finite & (magnitude != 0)
    magnitude = np.where(plain, magnitude, 1.0)
    short, special, inexact = _six_digits(magnitude)
    if single:
        reads_back = short.astype(np.float32) == magnitude.astype(np.float32)
        special |= _near_float32_midpoint(short)
    else:
        reads_back = short == magnitude
        special |= inexact
    whole_short = (short == np.floor(short)) & (short < 1e6)
    whole_long = (magnitude == np.floor(magnitude)) & (magnitude < 10.0 ** LONG_DIGITS[flat.dtype])
    found = np.where(reads_back, whole_short, 2 + whole_long).astype(np.int8)
    found[~finite | plain & special] = _SPECIAL
    found[finite & ~plain] = 1  # zero: "0.0", "-0.0"
    return found


def _pieces(array: np.ndarray) -> tuple[list[str], list]:
    """Each value's conversion, and the arguments for them (text for special values). A small
    array is written value by value (`text_of`): the array path costs some twenty numpy calls
    whatever the size, which for one answer's ten probabilities took twice as long."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.size <= SMALL:
        single = flat.dtype == np.float32
        return ["%s"] * flat.size, [text_of(value, single) for value in flat.tolist()]
    found = codes(flat)
    conversions = CONVERSIONS[flat.dtype]
    pieces = list(map(conversions.__getitem__, found.tolist()))
    values = flat.tolist()
    single = flat.dtype == np.float32
    for i in np.flatnonzero(found == _SPECIAL).tolist():
        values[i] = text_of(values[i], single)
    return pieces, values


def _nested(pieces: list[str], shape: tuple[int, ...]) -> list[str]:
    """Pieces grouped into JSON lists by `shape` without its first dimension: one per row."""
    for level in range(len(shape) - 1, 0, -1):
        size, groups = shape[level], math.prod(shape[:level])
        pieces = ["[" + ",".join(pieces[g * size : (g + 1) * size]) + "]" for g in range(groups)]
    return pieces


def text(array: np.ndarray) -> str:
    """A float32 or float64 array (any shape) as TF Serving writes it."""
    array = np.asarray(array)
    pieces, values = _pieces(array)
    if array.ndim == 0:
        return pieces[0] % tuple(values)
    rows = _nested(pieces, array.shape)
    return ("[" + ",".join(rows) + "]") % tuple(values)


def fragment(array: np.ndarray) -> orjson.Fragment:
    """`text` as raw JSON for orjson."""
    return orjson.Fragment(text(array))


def row_fragments(array: np.ndarray) -> list[orjson.Fragment]:
    """Each row (first dimension) of an array of rank 1 or more, as raw JSON."""
    array = np.asarray(array)
    pieces, values = _pieces(array)
    rows = _nested(pieces, array.shape)
    width = len(values) // len(rows) if rows else 0
    return [orjson.Fragment(row % tuple(values[i * width : (i + 1) * width])) for i, row in enumerate(rows)]


def value_fragments(array: np.ndarray) -> list[orjson.Fragment]:
    """Each value of an array, in order, as raw JSON."""
    pieces, values = _pieces(np.asarray(array))
    return [orjson.Fragment(piece % (value,)) for piece, value in zip(pieces, values, strict=True)]
