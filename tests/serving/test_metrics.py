"""The Prometheus page in TF Serving's dialect: the exporter's format as its own tests expect it
(tensorflow_serving/util/prometheus_exporter_test.cc at 2.20.0), TensorFlow's sampler buckets,
and what model_servers/http_server.cc records for each REST request (the server test at the
end)."""

from __future__ import annotations

import shutil
import threading

import httpx
import numpy as np

from jobs.serving import warmup
from jobs.serving.metrics import LATENCY_BOUNDS, Counter, Metrics, Sampler, exponential_bounds

from .conftest import LocalServer, local_only


def test_counter_and_label_escapes():
    """PrometheusExporterTest: Counter, SanitizeLabelValue, SanitizeLabelName, SanitizeMetricName."""
    lock = threading.Lock()
    counter = Counter("/test/path/total", ("name",), lock)
    counter.add("abc", amount=2)
    assert counter.lines() == ["# TYPE :test:path:total counter", ':test:path:total{name="abc"} 2']
    escaped = Counter("/test/path/total", ("name",), lock)
    escaped.add('"abc\\"', amount=2)
    assert escaped.lines()[1] == ':test:path:total{name="\\"abc\\\\\\""} 2'
    renamed = Counter("/test/path/total", ("my-name+1",), lock)
    renamed.add("abc", amount=2)
    assert renamed.lines()[1] == ':test:path:total{my_name_1="abc"} 2'
    digits = Counter("0/path-total_count", ("name",), lock)
    digits.add("abc", amount=2)
    assert digits.lines() == ["# TYPE _0:path:total_count counter", '_0:path:total_count{name="abc"} 2']


def test_histogram():
    """PrometheusExporterTest.Histogram: a value lands in the first bucket whose bound is above
    it (2 in le="4"); buckets are cumulative, the last is +Inf."""
    histogram = Sampler("/test/path/histogram", ("status",), threading.Lock(), exponential_bounds(1, 2, 10))
    for value in (2, 20, 200):
        histogram.add(value, "good")
    counts = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    bounds = ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512"]
    expected = ["# TYPE :test:path:histogram histogram"]
    expected += [
        f':test:path:histogram_bucket{{status="good",le="{b}"}} {c}' for b, c in zip(bounds, counts, strict=True)
    ]
    expected += [
        ':test:path:histogram_bucket{status="good",le="+Inf"} 3',
        ':test:path:histogram_sum{status="good"} 222',
        ':test:path:histogram_count{status="good"} 3',
    ]
    assert histogram.lines() == expected


def test_latency_buckets_are_tensorflows():
    """util.cc: request_latency and runtime_latency use Buckets::Exponential(10, 1.8, 33), in µs."""
    assert len(LATENCY_BOUNDS) == 33
    assert [f"{b:g}" for b in LATENCY_BOUNDS[:7]] == ["10", "18", "32.4", "58.32", "104.976", "188.957", "340.122"]
    assert 1.4e9 < LATENCY_BOUNDS[-1] < 1.5e9  # "~20 minutes"


def test_what_a_request_records():
    """http_server.cc: request_count for every request of a model by status; request_latency in
    µs for OK ones; TF Serving's page lists its metrics by name, TYPE lines without samples too."""
    metrics = Metrics()
    metrics.request("m", "OK", "predict", 0.0025)
    metrics.request("m", "NOT_FOUND", "predict", 0.001)
    metrics.request("", "INVALID_ARGUMENT", "", 0.001)  # a path that did not parse
    page = metrics.page().decode()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in page
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in page
    assert ':tensorflow:serving:request_count{model_name="",status="INVALID_ARGUMENT"} 1' in page
    assert ':tensorflow:serving:request_latency_count{model_name="m",API="predict",entrypoint="REST"} 1' in page
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="predict",entrypoint="REST"} 2500' in page
    assert 'API=""' not in page  # the failed ones are not timed
    types = [line.split()[2] for line in page.splitlines() if line.startswith("# TYPE :")]
    assert types == sorted(types) and ":tensorflow:serving:model_warmup_latency" in types
    assert page.endswith("\n")


@local_only
def test_a_server_records_as_tf_serving(half_plus_two, tmp_path):
    """Every /v1 request counts under its model (empty when the path does not parse, as for a
    preflight); the version's load and warm-up are counted under its folder."""
    base = tmp_path / "m"
    version = shutil.copytree(half_plus_two["tf2"] / "00000123", base / "7")
    warmup.write(version, {"serving_default": {"x": np.array([1.0], np.float32)}})
    server = LocalServer(base, tmp_path / "serve.log", "--model-name", "m", model="m")
    server.start(expect_version=7)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/v1/models/m:predict", json={"instances": [1.0]}).status_code == 200
            assert http.post("/v1/models/m:regress", json={"examples": [{"x": 1.0}]}).status_code == 400
            assert http.get("/v1/models/m/metadata").status_code == 200
            assert http.get("/v1/nothing").status_code == 400
            assert http.options("/v1/models/m", headers={"Origin": "http://x"}).status_code == 200
            assert http.get("/elsewhere").status_code == 404  # never reaches the REST handler
            page = http.get("/monitoring/prometheus/metrics").text
    finally:
        server.stop()
    samples = dict(line.rsplit(" ", 1) for line in page.splitlines() if not line.startswith("#"))
    path = version.resolve()
    expected = {
        ':tensorflow:serving:request_count{model_name="m",status="OK"}': 3,  # and the readiness checks
        ':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"}': 1,
        ':tensorflow:serving:request_count{model_name="",status="INVALID_ARGUMENT"}': 1,
        ':tensorflow:serving:request_count{model_name="",status="OK"}': 1,
        ':tensorflow:serving:request_latency_count{model_name="m",API="predict",entrypoint="REST"}': 1,
        ':tensorflow:serving:request_latency_count{model_name="m",API="",entrypoint="REST"}': 2,  # GETs
        ':tensorflow:serving:runtime_latency_count{model_name="m",API="Predict",runtime="TF1"}': 1,
        f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{path}",status="success"}}': 1,
        f':tensorflow:serving:model_warmup_records_read{{model_path="{path}",status="OK"}}': 1,
    }
    assert "serving_predictions_total{" not in page  # no class distribution among its outputs
    for sample, at_least in expected.items():
        assert float(samples.get(sample, 0)) >= at_least, (sample, page)
    assert float(samples[':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"}']) == 1
