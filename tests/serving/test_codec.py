"""The REST contract without the server machinery: paths and versions, JSON limits, request
decoding, image headers and the answer's encoding. No TensorFlow, no sockets."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from jobs.serving import images, jsonbody, routes
from jobs.serving.errors import ApiError, without_paths
from jobs.serving.limits import Limits
from jobs.serving.request import decode_predict
from jobs.serving.response import encode_predict
from jobs.serving.servable import Signature, TensorSpec

STRING = np.dtype(object)
SIGNATURES = {
    "serving_default": Signature(
        "serving_default", None, {"image_bytes": TensorSpec("image_bytes", STRING, (None,))}, {}
    ),
    "pixels": Signature("pixels", None, {"pixels": TensorSpec("pixels", np.dtype(np.uint8), (None, 28, 28))}, {}),
}


def png(width: int, height: int, mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def status_of(fn, *args) -> int:
    with pytest.raises(ApiError) as err:
        fn(*args)
    return err.value.status


# --- paths and versions ------------------------------------------------------------------


def test_routes_as_tf_serving_matches_them():
    assert routes.route("POST", "/v1/models/fmnist:predict") == routes.Route("predict", "fmnist")
    assert routes.route("POST", "/v1/models/fmnist/versions/7:predict") == routes.Route("predict", "fmnist", 7)
    assert routes.route("GET", "/v1/models/fmnist/versions/7/metadata").api == "metadata"
    assert routes.route("GET", "/v1/models/fmnist") == routes.Route("status", "fmnist")
    assert routes.route("GET", "/v1/models/fm%6Eist").model == "fmnist"  # the name is percent-decoded
    # TF Serving's patterns are case-insensitive ((?i)); the verb is then compared exactly.
    assert routes.route("POST", "/V1/MODELS/fmnist:predict") == routes.Route("predict", "fmnist")
    assert routes.route("GET", "/monitoring/prometheus/metrics").api == "metrics"
    for method, path in [
        ("POST", "/v1/models/fmnist:PREDICT"),
        ("GET", "/v1/models/fmnist:predict"),
        ("DELETE", "/v1/models/fmnist"),
        ("POST", "/v1/models/fmnist/versions/:predict"),
        ("POST", "/v1/models/fmnist:classify"),
    ]:
        assert status_of(routes.route, method, path) == 400, (method, path)
    assert status_of(routes.route, "GET", "/v2/models/fmnist") == 404


@pytest.mark.parametrize(
    "segment",
    ["\u0661", "%D9%A1", "\uff11", "1.0", "-1", "0x1", "1e3", " 1", "9" * 20, "9223372036854775808", "9" * 5000],
)
def test_a_version_is_ascii_digits_within_64_bits(segment):
    with pytest.raises(ApiError) as err:
        routes.route("POST", f"/v1/models/fmnist/versions/{segment}:predict")
    assert err.value.status == 400
    assert len(err.value.message) < 400  # a long version is not echoed back whole


def test_the_largest_version_is_accepted():
    assert routes.route("GET", "/v1/models/m/versions/9223372036854775807").version == 2**63 - 1
    assert routes.route("GET", "/v1/models/m/versions/0001").version == 1


# --- JSON --------------------------------------------------------------------------------


def test_json_structure_is_bounded_before_parsing():
    limits = Limits()
    bomb = b"[" + b",".join([b"[]"] * 3_000_000) + b"]"  # 9 MiB of empty lists
    with pytest.raises(ApiError) as err:
        jsonbody.parse(bomb, limits.max_json_containers, limits.max_json_values)
    assert err.value.status == 400 and "lists and objects" in err.value.message
    flat = b"[" + b",".join([b"0"] * 2_000_000) + b"]"
    with pytest.raises(ApiError) as err:
        jsonbody.parse(flat, limits.max_json_containers, limits.max_json_values)
    assert "values" in err.value.message
    deep = b"[" * 5000 + b"]" * 5000
    assert status_of(jsonbody.parse, deep, 10**6, 10**6) == 400


def test_the_largest_legitimate_bodies_fit_the_json_limits():
    """1024 28x28 pixel instances, and 1024 image instances, parse within the defaults."""
    limits = Limits()
    pixels = json.dumps({"signature_name": "pixels", "instances": np.zeros((1024, 28, 28), int).tolist()}).encode()
    assert len(jsonbody.parse(pixels, limits.max_json_containers, limits.max_json_values)["instances"]) == 1024
    named = json.dumps({"instances": [{"image_bytes": b64(png(28, 28))} for _ in range(1024)]}).encode()
    assert len(jsonbody.parse(named, limits.max_json_containers, limits.max_json_values)["instances"]) == 1024


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"\xff\xfe", b"[1,]", b'{"a": NaN}'])
def test_malformed_json_is_a_400(body):
    assert status_of(jsonbody.parse, body, 100, 100) == 400


# --- requests ----------------------------------------------------------------------------


def test_row_and_columnar_requests_decode_to_the_same_inputs():
    image = png(30, 40)
    rows = decode_predict({"instances": [{"image_bytes": b64(image)}, b64(image)]}, SIGNATURES, Limits())
    columns = decode_predict({"inputs": {"image_bytes": [b64(image), b64(image)]}}, SIGNATURES, Limits())
    assert rows.size == columns.size == 2 and rows.row_format and not columns.row_format
    assert rows.inputs["image_bytes"].tolist() == columns.inputs["image_bytes"].tolist() == [image, image]
    assert rows.costs.tolist() == [1200, 1200]  # decoded pixels, from the header
    pixels = decode_predict({"signature_name": "pixels", "instances": [[[1] * 28] * 28]}, SIGNATURES, Limits())
    assert pixels.inputs["pixels"].dtype == np.uint8 and pixels.inputs["pixels"].shape == (1, 28, 28)


def test_pixel_budget_is_checked_from_headers():
    limits = Limits(max_image_pixels=10_000, max_request_pixels=25_000)
    assert decode_predict({"instances": [b64(png(100, 100))] * 2}, SIGNATURES, limits).costs.sum() == 20_000
    with pytest.raises(ApiError) as err:
        decode_predict({"instances": [b64(png(100, 100))] * 3}, SIGNATURES, limits)
    assert "25000" in err.value.message and "instances" in err.value.message
    with pytest.raises(ApiError) as err:
        decode_predict({"instances": [b64(png(10, 10)), b64(png(101, 100))]}, SIGNATURES, limits)
    assert err.value.message.startswith("instances[1]: image of 101x100 pixels is over the limit")


def test_image_headers_name_every_supported_format():
    from PIL import Image

    for fmt in images.FORMATS:
        buffer = io.BytesIO()
        Image.new("RGB", (7, 5)).save(buffer, fmt)
        assert images.image_size(buffer.getvalue())[1:] == (7, 5), fmt
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buffer, "TIFF")
    with pytest.raises(ApiError) as err:
        images.pixel_costs(np.array([buffer.getvalue()], object), "instances", 100, 100)
    assert "TIFF images are not supported" in err.value.message


# --- answers -----------------------------------------------------------------------------


def test_answers_in_both_formats():
    outputs = {
        "probabilities": np.array([[0.1, 0.9], [1 / 3, 2 / 3]], np.float32),
        "class_id": np.array([1, 1], np.int64),
        "class_name": np.array([b"Shirt", b"\xff"], object),
    }
    rows = json.loads(encode_predict(outputs, row_format=True))["predictions"]
    assert rows[0] == {"probabilities": [0.1, 0.9], "class_id": 1, "class_name": "Shirt"}
    assert rows[1]["probabilities"] == [0.33333334, 0.6666667]  # float32's shortest digits
    assert rows[1]["class_name"] == {"b64": "/w=="}
    columns = json.loads(encode_predict(outputs, row_format=False))["outputs"]
    assert columns["class_id"] == [1, 1] and columns["class_name"][0] == "Shirt"
    nan = json.loads(encode_predict({"p": np.array([np.nan, np.inf], np.float32)}, row_format=True))
    assert nan == {"predictions": [None, None]}


def test_paths_are_taken_out_of_messages():
    text = "failed: /srv/models/fmnist/2/saved_model.pb not found; also /etc/passwd"
    cleaned = without_paths(text, "/srv/models/fmnist/2")
    assert "/srv" not in cleaned and "/etc" not in cleaned and "saved_model.pb" in cleaned


# --- limits ------------------------------------------------------------------------------


def test_every_limit_is_in_help_and_in_the_docs_with_its_default():
    from pathlib import Path

    from jobs.serving import limits
    from jobs.serving.cli import build_parser

    help_text = " ".join(build_parser().format_help().split())
    docs = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    rows = {
        row.split("|")[1].strip(" `"): [c.strip() for c in row.split("|")]
        for row in docs.splitlines()
        if row.startswith("| `--")
    }
    for field in limits.fields():
        name = limits.flag(field)
        assert f"{name} {field.name.upper()}" in help_text and f"(default: {field.default})" in help_text, name
        assert name in rows, f"{name} is missing from the limits table of docs/serving.md"
        _, _, default, what, answer, _ = rows[name]
        assert default.split()[0] == str(field.default), (name, default)
        assert what and answer.startswith(field.metadata["answer"].split(",")[0].split()[0]), (name, answer)
    assert set(rows) == {limits.flag(f) for f in limits.fields()}, "the docs list a limit the server lacks"
