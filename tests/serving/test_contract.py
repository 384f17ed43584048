"""TF Serving's REST contract, as this project uses it: status, metadata, predict in row and
columnar formats, both signatures, and errors. Runs against SERVING_URL when it is set."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from .conftest import (
    MODEL,
    SERVING_URL,
    assert_serves,
    b64,
    check_prediction,
    encode,
    local_only,
    reference_jpeg,
    reference_request,
    served_versions,
)

PREDICT = f"/v1/models/{MODEL}:predict"


def pixels(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def served_version(http) -> str:
    available = [v for v, e in served_versions(http).items() if e["state"] == "AVAILABLE"]
    assert available, served_versions(http)
    return max(available, key=int)


# --- status and metadata -----------------------------------------------------------------


def test_status_reports_the_served_version_available(http):
    entries = served_versions(http)
    version = served_version(http)
    assert version.isdigit()
    assert entries[version]["status"]["error_code"] == "OK"
    response = http.get(f"/v1/models/{MODEL}/versions/{version}")
    assert response.status_code == 200
    (entry,) = response.json()["model_version_status"]
    assert entry["version"] == version and entry["state"] == "AVAILABLE"


def test_status_of_unknown_version_or_model_is_404(http):
    for path in (f"/v1/models/{MODEL}/versions/987654", "/v1/models/no_such_model"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert isinstance(response.json()["error"], str)


def test_metadata_shows_both_signatures(http):
    response = http.get(f"/v1/models/{MODEL}/metadata")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"]["name"] == MODEL
    assert body["model_spec"]["version"] == served_version(http)
    defs = body["metadata"]["signature_def"]["signature_def"]

    def dims(info):
        return [int(d["size"]) for d in info["tensor_shape"]["dim"]]

    default, by_pixels = defs["serving_default"], defs["pixels"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert dims(default["inputs"]["image_bytes"]) == [-1]
    assert by_pixels["inputs"]["pixels"]["dtype"] == "DT_UINT8"
    assert dims(by_pixels["inputs"]["pixels"]) == [-1, 28, 28]
    for signature in (default, by_pixels):
        outputs = signature["outputs"]
        assert outputs["probabilities"]["dtype"] == "DT_FLOAT"
        assert dims(outputs["probabilities"]) == [-1, 10]
        assert outputs["class_id"]["dtype"] == "DT_INT64"
        assert outputs["class_name"]["dtype"] == "DT_STRING"


# --- predict -----------------------------------------------------------------------------


def test_reference_request_format(http):
    """{"instances": [{"image_bytes": {"b64": <a 299x299 colour JPEG>}}]}, as the reference
    system's clients send it."""
    response = http.post(PREDICT, json=reference_request(reference_jpeg(1), reference_jpeg(2)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        check_prediction(prediction)


def test_row_and_columnar_formats_agree(http):
    images = [encode(p) for p in pixels(5, 3)]
    named_rows = http.post(PREDICT, json={"instances": [{"image_bytes": b64(i)} for i in images]})
    unnamed_rows = http.post(PREDICT, json={"instances": [b64(i) for i in images]})
    named_columns = http.post(PREDICT, json={"inputs": {"image_bytes": [b64(i) for i in images]}})
    unnamed_columns = http.post(PREDICT, json={"inputs": [b64(i) for i in images]})
    for response in (named_rows, unnamed_rows, named_columns, unnamed_columns):
        assert response.status_code == 200, response.text
    rows = named_rows.json()["predictions"]
    assert [r["class_id"] for r in unnamed_rows.json()["predictions"]] == [r["class_id"] for r in rows]
    for response in (named_columns, unnamed_columns):
        outputs = response.json()["outputs"]
        assert set(outputs) == {"probabilities", "class_id", "class_name"}
        assert outputs["class_id"] == [r["class_id"] for r in rows]
        assert outputs["class_name"] == [r["class_name"] for r in rows]
        np.testing.assert_allclose(outputs["probabilities"], [r["probabilities"] for r in rows], atol=1e-5)


def test_pixels_signature_matches_image_bytes(http):
    """The same 28x28 image as uint8 pixels and as PNG bytes gets the same answer."""
    batch = pixels(7, 4)
    by_pixels = http.post(PREDICT, json={"signature_name": "pixels", "instances": batch.tolist()})
    by_columns = http.post(PREDICT, json={"signature_name": "pixels", "inputs": {"pixels": batch.tolist()}})
    by_bytes = http.post(PREDICT, json={"instances": [b64(encode(p)) for p in batch]})
    for response in (by_pixels, by_columns, by_bytes):
        assert response.status_code == 200, response.text
    rows = by_pixels.json()["predictions"]
    for prediction in rows:
        check_prediction(prediction)
    assert [r["class_id"] for r in by_bytes.json()["predictions"]] == [r["class_id"] for r in rows]
    np.testing.assert_allclose(
        [r["probabilities"] for r in by_bytes.json()["predictions"]], [r["probabilities"] for r in rows], atol=1e-4
    )
    assert by_columns.json()["outputs"]["class_id"] == [r["class_id"] for r in rows]


def test_named_row_instances_for_pixels(http):
    batch = pixels(8, 2)
    response = http.post(
        PREDICT, json={"signature_name": "pixels", "instances": [{"pixels": p.tolist()} for p in batch]}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_images_of_any_size_and_format(http):
    rng = np.random.default_rng(3)
    images = [
        encode(rng.integers(0, 256, (28, 28), dtype=np.uint8), "PNG"),
        encode(rng.integers(0, 256, (64, 40, 3), dtype=np.uint8), "PNG"),
        encode(rng.integers(0, 256, (17, 90), dtype=np.uint8), "JPEG"),
        encode(rng.integers(0, 256, (500, 500, 3), dtype=np.uint8), "JPEG"),
    ]
    response = http.post(PREDICT, json=reference_request(*images))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 4


def test_specific_version_path(http):
    version = served_version(http)
    response = http.post(f"/v1/models/{MODEL}/versions/{version}:predict", json=reference_request(reference_jpeg()))
    assert response.status_code == 200, response.text
    check_prediction(response.json()["predictions"][0])


# --- errors ------------------------------------------------------------------------------

GOOD_PIXELS = [[0] * 28] * 28
IMAGE = base64.b64encode(encode(np.zeros((28, 28), np.uint8))).decode()

# (id, body, expected status): every one is a client mistake.
BAD_REQUESTS = [
    ("malformed-json", b'{"instances": [', 400),
    ("not-json-at-all", b"\x00\xff\xfe binary", 400),
    ("empty-body", b"", 400),
    ("json-array", b"[1, 2, 3]", 400),
    ("json-string", b'"instances"', 400),
    ("neither-key", {"signature_name": "serving_default"}, 400),
    ("both-keys", {"instances": [{"b64": IMAGE}], "inputs": [{"b64": IMAGE}]}, 400),
    ("instances-not-list", {"instances": {"b64": IMAGE}}, 400),
    ("empty-instances", {"instances": []}, 400),
    ("unknown-signature", {"signature_name": "no_such_signature", "instances": [{"b64": IMAGE}]}, 400),
    ("bad-base64", {"instances": [{"b64": "this is not base64!"}]}, 400),
    ("b64-not-string", {"instances": [{"b64": 12}]}, 400),
    ("bytes-not-image", {"instances": [{"b64": base64.b64encode(b"hello, no image here").decode()}]}, 400),
    ("truncated-png", {"instances": [{"b64": base64.b64encode(base64.b64decode(IMAGE)[:40]).decode()}]}, 400),
    ("number-for-bytes", {"instances": [3]}, 400),
    ("list-for-bytes", {"instances": [[{"b64": IMAGE}]]}, 400),
    ("unknown-input-name", {"instances": [{"image": {"b64": IMAGE}}]}, 400),
    ("pixels-wrong-rank", {"signature_name": "pixels", "instances": [[0] * 28]}, 400),
    ("pixels-wrong-shape", {"signature_name": "pixels", "instances": [[[0] * 27] * 28]}, 400),
    ("pixels-ragged", {"signature_name": "pixels", "instances": [[[0] * 28] * 27 + [[0] * 3]]}, 400),
    ("pixels-scalar", {"signature_name": "pixels", "instances": [5]}, 400),
    ("pixels-columnar-rank", {"signature_name": "pixels", "inputs": GOOD_PIXELS}, 400),
    ("pixels-strings", {"signature_name": "pixels", "instances": [[["a"] * 28] * 28]}, 400),
    ("pixels-floats", {"signature_name": "pixels", "instances": [[[0.5] * 28] * 28]}, 400),
    (
        "pixels-nan",
        b'{"signature_name": "pixels", "instances": [['
        + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28)
        + b"]]}",
        400,
    ),
    ("pixels-null", {"signature_name": "pixels", "instances": [[[None] * 28] * 28]}, 400),
    ("pixels-b64", {"signature_name": "pixels", "instances": [{"b64": IMAGE}]}, 400),
    ("signature-not-string", {"signature_name": 3, "instances": [{"b64": IMAGE}]}, 400),
]


# TF Serving hands a tensor of any rank to the model (util/json_tensor.cc checks no shape), where
# a kernel may abort the process; the local server refuses a rank other than the signature's
# (jobs/serving/request.py, _check_ranks). Not part of the shared contract.
STRICTER_THAN_TF_SERVING = {
    name: "TF Serving passes a tensor of another rank to the model"
    for name in ("list-for-bytes", "pixels-wrong-rank", "pixels-scalar", "pixels-columnar-rank")
}


def bad_request_params():
    for name, body, status in BAD_REQUESTS:
        marks = []
        if name in STRICTER_THAN_TF_SERVING:
            reason = f"SERVING_URL is set and {STRICTER_THAN_TF_SERVING[name]}; the local server refuses it"
            marks.append(pytest.mark.skipif(bool(SERVING_URL), reason=reason))
        yield pytest.param(body, status, id=name, marks=marks)


@pytest.mark.parametrize("body,status", list(bad_request_params()))
def test_bad_request_is_a_json_4xx_and_the_server_keeps_serving(http, body, status):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(PREDICT, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert_serves(http)


@pytest.mark.parametrize(
    "body,answer",
    [
        ({"signature_name": "pixels", "instances": [[[256] * 28] * 28]}, "predictions"),  # cast: 0
        ({"signature_name": "pixels", "instances": [[[-1] * 28] * 28]}, "predictions"),  # cast: 255
        ({"inputs": []}, "outputs"),  # an empty batch runs
        ({"inputs": {"image_bytes": []}}, "outputs"),
    ],
)
def test_what_tf_serving_takes_is_taken(http, body, answer):
    """TF Serving casts any int32 to uint8 and runs an empty columnar batch
    (util/json_tensor.cc, AddValueToTensor, FillTensorMapFromInputsMap, 2.20.0)."""
    response = http.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    values = response.json()[answer]
    if answer == "outputs":
        assert values == {"class_id": [], "class_name": [], "probabilities": []}
    else:
        check_prediction(values[0])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/no_such_model:predict",
        f"/v1/models/{MODEL}/versions/987654:predict",
    ],
)
def test_unknown_model_or_version_is_404(http, path):
    response = http.post(path, json=reference_request(reference_jpeg()))
    assert response.status_code == 404, response.text
    assert isinstance(response.json()["error"], str)
    assert_serves(http)


@pytest.mark.parametrize(
    "version",
    [
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
        "%EF%BC%91",  # FULLWIDTH DIGIT ONE
        "1.0",
        "-1",
        "99999999999999999999",  # over 64 bits
        "9" * 4301,  # past Python's int() digit limit
    ],
)
def test_a_version_that_is_not_ascii_digits_within_64_bits_is_400(http, version):
    for method, path in (
        ("POST", f"/v1/models/{MODEL}/versions/{version}:predict"),
        ("GET", f"/v1/models/{MODEL}/versions/{version}"),
        ("GET", f"/v1/models/{MODEL}/versions/{version}/metadata"),
    ):
        response = http.request(method, path, json=reference_request(reference_jpeg()) if method == "POST" else None)
        assert response.status_code == 400, (path[:80], response.status_code, response.text[:200])
        assert isinstance(response.json()["error"], str)
    assert_serves(http)


def test_paths_match_as_tf_serving_matches_them(http):
    """TF Serving's path patterns are case-insensitive; the verb after the colon is not."""
    request = reference_request(reference_jpeg())
    assert http.post(f"/V1/Models/{MODEL}:predict", json=request).status_code == 200
    response = http.post(f"/v1/models/{MODEL}:PREDICT", json=request)
    assert response.status_code == 400 and "Malformed request" in response.json()["error"]
    assert http.post(f"/v1/models/{MODEL.upper()}:predict", json=request).status_code == 404  # names are exact


@local_only
def test_oversized_body_is_413(http):
    from jobs.serving.limits import Limits

    response = http.post(
        PREDICT, content=b" " * (Limits().max_body_bytes + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert_serves(http)


@local_only
def test_oversized_image_is_400(http):
    from jobs.serving.limits import Limits

    side = int(Limits().max_image_pixels ** 0.5) + 1
    huge = encode(np.zeros((side, side), np.uint8), "PNG")  # compresses to a few KiB
    response = http.post(PREDICT, json=reference_request(huge))
    assert response.status_code == 400, response.text
    assert "pixels" in response.json()["error"]


@local_only
def test_unknown_paths(http):
    assert http.get("/nothing/here").status_code == 404
    response = http.get("/v1/something")
    assert response.status_code == 400 and "error" in response.json()


@local_only
def test_prometheus_metrics(http):
    """TF Serving's series: request_count by model and status code name, request_latency in
    microseconds for OK answers by model, API and entrypoint (test_metrics.py has the rest)."""
    from prometheus_client.parser import text_string_to_metric_families

    http.post(PREDICT, json=reference_request(reference_jpeg()))
    http.post(PREDICT, content=b"{", headers={"content-type": "application/json"})
    response = http.get("/monitoring/prometheus/metrics")
    assert response.status_code == 200 and response.headers["content-type"] == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    count = ":tensorflow:serving:request_count_total"  # the parser names a counter's samples _total
    assert samples[(count, (("model_name", MODEL), ("status", "OK")))] >= 1
    assert samples[(count, (("model_name", MODEL), ("status", "INVALID_ARGUMENT")))] >= 1
    latency = (("API", "predict"), ("entrypoint", "REST"), ("model_name", MODEL))
    assert samples[(":tensorflow:serving:request_latency_count", latency)] >= 1
    loaded = [key for key in samples if key[0] == ":tensorflow:cc:saved_model:load_attempt_count_total"]
    assert any(dict(labels)["model_path"].endswith(f"/{served_version(http)}") for _, labels in loaded)
    assert samples[("serving_batch_size_count", ())] >= 1
