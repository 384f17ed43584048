"""Random payloads never get a 5xx: each answer is a 200 with predictions or a 4xx with
{"error": "..."}, and the server keeps serving afterwards."""

from __future__ import annotations

import base64
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODEL, assert_serves, encode

PREDICT = f"/v1/models/{MODEL}:predict"

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=30,
)
signature_names = st.one_of(st.sampled_from(["serving_default", "pixels", ""]), st.text(max_size=12), json_scalars)


@st.composite
def pixel_arrays(draw):
    """Mostly plausible pixel tensors, with shapes, values and types slightly wrong."""
    shape = draw(st.lists(st.integers(0, 30), min_size=0, max_size=4))
    if draw(st.booleans()):
        shape = [draw(st.integers(0, 3)), 28, 28]
    size = int(np.prod(shape)) if shape else 1
    if size > 4000:
        shape, size = [1, 28, 28], 784
    kind = draw(st.sampled_from(["ok", "big", "negative", "float", "nan"]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, size)
    values = {
        "ok": values,
        "big": values + 200,
        "negative": values - 300,
        "float": values + 0.5,
        "nan": np.where(values > 128, np.nan, values),
    }[kind]
    return np.asarray(values).reshape(shape).tolist()


@st.composite
def binary_values(draw):
    choice = draw(st.sampled_from(["image", "junk", "bad-b64", "text", "truncated"]))
    if choice == "image":
        side = draw(st.integers(1, 64))
        data = encode(
            np.full((side, side), draw(st.integers(0, 255)), np.uint8), draw(st.sampled_from(["PNG", "JPEG"]))
        )
        return {"b64": base64.b64encode(data).decode()}
    if choice == "junk":
        return {"b64": base64.b64encode(draw(st.binary(max_size=64))).decode()}
    if choice == "truncated":
        data = encode(np.zeros((28, 28), np.uint8), "PNG")
        return {"b64": base64.b64encode(data[: draw(st.integers(0, len(data) - 1))]).decode()}
    if choice == "bad-b64":
        return {"b64": draw(st.text(max_size=20))}
    return draw(st.text(max_size=20))


@st.composite
def payloads(draw):
    shape = draw(st.sampled_from(["random-json", "random-bytes", "rows", "columns", "pixels-rows", "pixels-columns"]))
    if shape == "random-bytes":
        return draw(st.binary(max_size=200))
    if shape == "random-json":
        return json.dumps(draw(json_values)).encode()
    body: dict = {}
    if draw(st.booleans()):
        body["signature_name"] = draw(signature_names)
    if shape == "rows":
        item = st.one_of(binary_values(), st.fixed_dictionaries({"image_bytes": binary_values()}), json_values)
        body["instances"] = draw(st.lists(item, max_size=4))
    elif shape == "columns":
        body["inputs"] = draw(
            st.one_of(
                st.lists(binary_values(), max_size=4),
                st.fixed_dictionaries({"image_bytes": st.lists(binary_values(), max_size=4)}),
                json_values,
            )
        )
    elif shape == "pixels-rows":
        body.setdefault("signature_name", "pixels")
        body["instances"] = draw(st.lists(pixel_arrays(), max_size=3))
    else:
        body.setdefault("signature_name", "pixels")
        body["inputs"] = draw(st.one_of(pixel_arrays(), st.fixed_dictionaries({"pixels": pixel_arrays()})))
    if draw(st.integers(0, 9)) == 0:  # now and then, both keys
        body["inputs" if "instances" in body else "instances"] = []
    return json.dumps(body).encode()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=payloads())
def test_random_payloads_get_200_or_a_json_4xx(http, body):
    response = http.post(PREDICT, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body[:300], response.text)
    answer = response.json()
    if response.status_code == 200:
        assert "predictions" in answer or "outputs" in answer
    else:
        assert 400 <= response.status_code < 500
        assert isinstance(answer.get("error"), str) and answer["error"], answer
    assert_serves(http)
