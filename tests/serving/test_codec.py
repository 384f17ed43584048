"""The REST contract without the server machinery: paths and versions, JSON limits, request
decoding, image headers and the answer's encoding. No TensorFlow, no sockets. TF Serving's own
expectations for the JSON codec are in test_json_tensor.py."""

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
from jobs.serving.servable import Signature, TensorInfo

SIGNATURES = {
    "serving_default": Signature(
        "serving_default", "", {"image_bytes": TensorInfo("image_bytes", "image_bytes:0", "DT_STRING", (-1,))}, {}
    ),
    "pixels": Signature("pixels", "", {"pixels": TensorInfo("pixels", "pixels:0", "DT_UINT8", (-1, 28, 28))}, {}),
}


def decode(payload: dict, limits: Limits | None = None):
    signature = SIGNATURES[payload.get("signature_name") or "serving_default"]
    return decode_predict(payload, signature, limits or Limits())


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
    assert routes.route("GET", "/v1/models/fmnist/METADATA").api == "status"  # the sub-resource is exact
    assert routes.route("GET", "/monitoring/prometheus/metrics").api == "metrics"
    assert routes.route("POST", "/v1/models/m/labels/stable:classify") == routes.Route("classify", "m", None, "stable")
    assert routes.route("GET", "/v1/models/m/labels/a%20b/metadata").label == "a b"
    assert routes.route("OPTIONS", "/v1/anything").api == "options"
    for method, path in [
        ("POST", "/v1/models/fmnist:PREDICT"),
        ("GET", "/v1/models/fmnist:predict"),
        ("DELETE", "/v1/models/fmnist"),
        ("POST", "/v1/models/fmnist/versions/:predict"),
        ("POST", "/v1/models/fmnist/versions/1/labels/a:predict"),
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


@pytest.mark.parametrize(
    "body,words",
    [
        (b"", "The document is empty"),
        (b"  ", "The document is empty. at offset: 2"),
        (b"{", "Missing a name for object member. at offset: 1"),
        (b"[1 2]", "Missing a comma or ']' after an array element. at offset: 3"),
        (b'{"a": 1 "b"}', "Missing a comma or '}' after an object member. at offset: 8"),
        (b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
        (b"[1,]", "Invalid value. at offset: 3"),
        (b'"abc', "Missing a closing quotation mark in string. at offset: 0"),
    ],
)
def test_malformed_json_is_a_400_in_rapidjson_words(body, words):
    """TF Serving's JSON errors are rapidjson's (util/json_tensor.cc, ParseJson, 2.20.0)."""
    with pytest.raises(ApiError) as err:
        jsonbody.parse(body, 100, 100)
    assert err.value.status == 400 and err.value.message == f"JSON Parse error: {words}"


def test_json_as_rapidjson_reads_it():
    """NaN and the infinities are numbers, what follows the first value is ignored, and bytes
    that are not UTF-8 survive in strings (rapidjson's kParseNanAndInfFlag,
    kParseStopWhenDoneFlag, no encoding check; json_tensor_test.cc TensorFromNonNullTerminatedBuffer)."""
    value = jsonbody.parse(b'{"a": [NaN, Infinity, -Infinity]}X', 100, 100)
    assert np.isnan(value["a"][0]) and value["a"][1:] == [float("inf"), float("-inf")]
    assert jsonbody.parse(b'{"instances": [[1,2],[3,4]]} trailing', 100, 100) == {"instances": [[1, 2], [3, 4]]}
    raw = jsonbody.parse(b'{"s": "\xff\xfe"}', 100, 100)["s"]
    assert raw.encode("utf-8", "surrogateescape") == b"\xff\xfe"


# --- requests ----------------------------------------------------------------------------


def test_row_and_columnar_requests_decode_to_the_same_inputs():
    image = png(30, 40)
    rows = decode({"instances": [{"image_bytes": b64(image)}, {"image_bytes": b64(image)}]})
    unnamed = decode({"instances": [b64(image), b64(image)]})
    columns = decode({"inputs": {"image_bytes": [b64(image), b64(image)]}})
    assert rows.size == unnamed.size == columns.size == 2 and rows.row_format and not columns.row_format
    assert rows.batched and columns.batched
    expected = [image, image]
    assert rows.inputs["image_bytes"].tolist() == unnamed.inputs["image_bytes"].tolist() == expected
    assert columns.inputs["image_bytes"].tolist() == expected
    assert rows.costs.tolist() == [1200, 1200]  # decoded pixels, from the header
    pixels = decode({"signature_name": "pixels", "instances": [[[1] * 28] * 28]})
    assert pixels.inputs["pixels"].dtype == np.uint8 and pixels.inputs["pixels"].shape == (1, 28, 28)
    assert pixels.costs.tolist() == [784]  # values
    assert decode({"instances": [b64(b"not an image")]}).costs.tolist() == [1]  # the model decides


def test_pixel_budget_is_checked_from_headers():
    limits = Limits(max_image_pixels=10_000, max_request_pixels=25_000)
    assert decode({"instances": [b64(png(100, 100))] * 2}, limits).costs.sum() == 20_000
    with pytest.raises(ApiError) as err:
        decode({"instances": [b64(png(100, 100))] * 3}, limits)
    assert "25000" in err.value.message and "instances" in err.value.message
    with pytest.raises(ApiError) as err:
        decode({"instances": [b64(png(10, 10)), b64(png(101, 100))]}, limits)
    assert err.value.message.startswith("instances[1]: image of 101x100 pixels is over the limit")


def test_image_headers_are_read_for_every_format_decode_image_reads():
    from PIL import Image

    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (7, 5)).save(buffer, fmt)
        assert images.looks_like_image(buffer.getvalue()), fmt
        assert images.costs(np.array([buffer.getvalue()], object), "instances", 100, 100).tolist() == [35], fmt
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buffer, "TIFF")  # not one of them: the model's to refuse
    assert images.costs(np.array([buffer.getvalue(), b"text"], object), "instances", 100, 100).tolist() == [1, 1]


def test_a_pngs_size_is_read_from_its_header_as_pil_reads_it():
    """The fast path (images.png_size) agrees with PIL's open wherever PIL reads a size, and
    leaves to PIL whatever it does not read itself (a broken IHDR, a cut-off file)."""
    from PIL import Image

    def pil_size(data: bytes):
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Exception:
            return None

    for mode, size in (("L", (28, 28)), ("RGB", (299, 299)), ("RGBA", (1, 7)), ("P", (640, 3))):
        buffer = io.BytesIO()
        Image.new(mode, size).save(buffer, "PNG")
        data = buffer.getvalue()
        assert images.png_size(data) == pil_size(data) == size, mode
        broken = bytearray(data)
        broken[18] ^= 1  # the width, under the CRC
        assert images.png_size(bytes(broken)) is None and pil_size(bytes(broken)) is None
        assert images.png_size(data[:30]) is None
        assert images.image_size(data[:30]) == pil_size(data[:30])


# --- answers -----------------------------------------------------------------------------


def test_answers_in_both_formats():
    outputs = {
        "probabilities": np.array([[0.1, 0.9], [1 / 3, 2 / 3]], np.float32),
        "class_id": np.array([1, 1], np.int64),
        "class_name": np.array([b"Shirt", b"\xff"], object),
    }
    rows = json.loads(encode_predict(outputs, row_format=True))["predictions"]
    assert rows[0] == {"probabilities": [0.1, 0.9], "class_id": 1, "class_name": "Shirt"}
    # 6 significant digits where they read back as the same float32, else 9, as TF Serving writes them
    assert rows[0]["probabilities"] == [0.1, 0.9] and rows[1]["probabilities"] == [0.333333343, 0.666666687]
    assert rows[1]["class_name"] == {"b64": "/w=="}  # not UTF-8: TF Serving would write the raw byte
    columns = json.loads(encode_predict(outputs, row_format=False))["outputs"]
    assert columns["class_id"] == [1, 1] and columns["class_name"][0] == "Shirt"


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
