"""Floats as TF Serving 2.20 writes them (`util/json_tensor.cc`, `WriteDecimal`): printf's `%g`
(absl::StrCat), `%.9g`/`%.17g` when 6 digits do not read back, `.0` after a text with neither
`.` nor `e`, NaN and the infinities as words. The expected texts are those of
`util/json_tensor_test.cc` at 2.20.0 and of WriteDecimal's own comment; the array code is then
held to the one-value rule (`floats.text_of`) on values of every kind, and that rule's reading
back of a float32 to exact arithmetic."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import orjson
import pytest

from jobs.serving import floats

# (value, dtype, TF Serving's text)
GOLDEN = [
    # FromJsonSingleFloatTensorSixDigitPrecision
    (9000000, np.float32, "9e+06"),
    (999999, np.float32, "999999.0"),
    (0.50000, np.float32, "0.5"),
    (0.0003, np.float32, "0.0003"),
    (0.00003, np.float32, "3e-05"),
    (555557.5, np.float32, "555557.5"),
    # FromJsonSingleFloatTensorNonFinite, JsonFromRegressionResultWithNonFinite
    (3, np.float32, "3.0"),
    (math.nan, np.float32, "NaN"),
    (math.inf, np.float32, "Infinity"),
    (-math.inf, np.float32, "-Infinity"),
    (0.2, np.float32, "0.2"),
    (1.0, np.float32, "1.0"),
    # WriteDecimal: a float32 whose 6 digits do not read back gets max_digits10 = 9
    (1.62234282e-05, np.float32, "1.62234282e-05"),
    (0.1234567, np.float32, "0.123456702"),
    (1234567, np.float32, "1234567.0"),
    (16777217, np.float32, "16777216.0"),
    (3e9, np.float32, "3e+09"),
    (-0.0, np.float32, "-0.0"),
    (0.0, np.float64, "0.0"),
    (0.1, np.float64, "0.1"),
    (1 / 3, np.float64, "0.33333333333333331"),
    (2.5e-300, np.float64, "2.5e-300"),
]


@pytest.mark.parametrize(("value", "dtype", "expected"), GOLDEN)
def test_golden_values(value, dtype, expected):
    array = np.array([value], dtype)
    assert floats.text_of(float(array[0]), dtype == np.float32) == expected
    assert floats.text(array) == f"[{expected}]"
    assert floats.text(array[0]) == expected


def _float32_by_fractions(text: str) -> float:
    """The float32 nearest to a decimal, found with exact fractions among the neighbours of a
    first guess; ties to the even significand."""
    exact = Fraction(text)
    guess = np.float32(float(text))
    candidates = [guess, np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))]
    candidates = [c for c in candidates if math.isfinite(c)]
    return float(min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.uint32)) & 1)))


def test_reading_back_a_float32_is_exact():
    """SimpleAtof's result, including decimals that are exactly halfway between two float32s
    (ties to even) and decimals a double rounds onto such a halfway point."""
    rng = np.random.default_rng(7)
    texts = [f"{v:.6g}" for v in rng.random(2000).astype(np.float32).tolist()]
    texts += ["8.8064e+12", "8.80640e+12", "1.00000006e+00", "16777217", "0.5000000298023224"]
    for text in texts:
        assert floats.float32_of(text) == _float32_by_fractions(text), text


def _random_arrays():
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 12, (64, 10))
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    yield (softmax / softmax.sum(1, keepdims=True)).astype(np.float32)
    yield rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    yield (10.0 ** rng.uniform(-45, 38.5, 20_000)).astype(np.float32)
    yield rng.integers(-(2**26), 2**26, 20_000).astype(np.float32)
    yield (rng.integers(-(10**7), 10**7, 20_000) / 2).astype(np.float32)
    yield (np.rint(rng.uniform(-1e9, 1e9, 20_000)) / 10.0 ** rng.integers(0, 9, 20_000)).astype(np.float32)
    yield rng.integers(0, 2**63, 20_000, dtype=np.uint64).view(np.float64)
    yield 10.0 ** rng.uniform(-300, 300, 20_000)
    yield np.rint(rng.uniform(-1e9, 1e9, 20_000)) / 10.0 ** rng.integers(0, 9, 20_000)


@pytest.mark.parametrize("array", list(_random_arrays()), ids=lambda a: f"{a.dtype}{a.shape}")
def test_arrays_follow_the_one_value_rule(array):
    single = array.dtype == np.float32
    expected = [floats.text_of(value, single) for value in array.reshape(-1).tolist()]
    assert floats.text(array.reshape(-1))[1:-1].split(",") == expected
    assert [orjson.dumps(fragment).decode() for fragment in floats.value_fragments(array)] == expected


def test_shapes_and_rows():
    values = np.array([[[1.5, np.nan], [2e-7, 3]], [[-0.0, np.inf], [7e6, 0.1]]], np.float32)
    text = "[[[1.5,NaN],[2e-07,3.0]],[[-0.0,Infinity],[7e+06,0.1]]]"
    assert floats.text(values) == text
    assert orjson.dumps({"x": floats.fragment(values)}) == b'{"x":' + text.encode() + b"}"
    rows = [orjson.dumps(row).decode() for row in floats.row_fragments(values)]
    assert rows == ["[[1.5,NaN],[2e-07,3.0]]", "[[-0.0,Infinity],[7e+06,0.1]]"]
    assert floats.text(np.zeros((0, 3), np.float32)) == "[]"
    assert floats.text(np.zeros((2, 0), np.float32)) == "[[],[]]"
    assert floats.row_fragments(np.zeros((0, 3), np.float32)) == []
    assert json.loads(floats.text(np.float64(0.25))) == 0.25
