"""What the model predicts (jobs/serving/signals.py): per-class counts and the confidence
histogram per version on the metrics page, and the sampled prediction log, read from a real
server on loopback; the rule that picks a signature's class distribution, on its own."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys

import httpx
import pytest

from jobs.serving.servable import Signature, TensorInfo
from jobs.serving.signals import CONFIDENCE_BOUNDS, Reading, reading
from tests.helpers import ROOT

from .conftest import MODEL, LocalServer, env, local_only, one_line_error, promote, reference_jpeg, reference_request

LOG_BYTES = 4000  # a few requests' lines: the tests see the log rotate


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory, trained_model):
    """A server with the prediction log on for every request, rotated at LOG_BYTES, 2 kept."""
    root = tmp_path_factory.mktemp("signals")
    base = root / "models" / MODEL
    promote(trained_model, base, 1)
    log = root / "logs" / "predictions.jsonl"
    server = LocalServer(
        base,
        root / "serve.log",
        "--prediction-log",
        str(log),
        "--prediction-log-sample",
        "1",
        "--prediction-log-max-bytes",
        str(LOG_BYTES),
        "--prediction-log-backups",
        "2",
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            yield http, log
    finally:
        server.stop()


def page_samples(http) -> dict[str, float]:
    page = http.get("/monitoring/prometheus/metrics").text
    return {key: float(value) for key, value in (line.rsplit(" ", 1) for line in page.splitlines() if line[:1] != "#")}


def log_lines(log) -> list[dict]:
    files = sorted(log.parent.glob(log.name + "*"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


@local_only
def test_counts_and_confidences_match_the_answers(logging_server):
    """Every instance answered counts once under its version and answered class name; its top
    probability lands in the confidence histogram's first bucket at or above it."""
    http, _ = logging_server
    before = page_samples(http)
    answered = collections.Counter()
    confidences = []
    for seed in range(6):
        images = [reference_jpeg(seed * 10 + i) for i in range(1 + seed % 3)]
        response = http.post(f"/v1/models/{MODEL}:predict", json=reference_request(*images))
        assert response.status_code == 200, response.text
        for prediction in response.json()["predictions"]:
            answered[prediction["class_name"]] += 1
            confidences.append(max(prediction["probabilities"]))
    after = page_samples(http)

    def added(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    for name, count in answered.items():
        assert added(f'serving_predictions_total{{model_name="{MODEL}",version="1",class="{name}"}}') == count
    counted = sum(v for k, v in after.items() if k.startswith("serving_predictions_total{"))
    counted -= sum(v for k, v in before.items() if k.startswith("serving_predictions_total{"))
    assert counted == len(confidences)
    series = f'model_name="{MODEL}",version="1"'
    assert added(f"serving_prediction_confidence_count{{{series}}}") == len(confidences)
    assert added(f"serving_prediction_confidence_sum{{{series}}}") == pytest.approx(sum(confidences), rel=1e-4)
    for bound in CONFIDENCE_BOUNDS:
        below = sum(1 for c in confidences if c <= bound)
        le = f"{bound:g}"
        # answers carry 6 significant digits: a confidence this close to a bound may sit either side
        near = sum(1 for c in confidences if abs(c - bound) < 1e-5)
        assert abs(added(f'serving_prediction_confidence_bucket{{{series},le="{le}"}}') - below) <= near


@local_only
def test_the_log_honours_or_makes_request_ids(logging_server):
    """X-Request-Id comes back as sent and names the request's lines; a request without one (or
    with one that is not a short printable token) gets a new id, returned in the answer."""
    http, log = logging_server
    images = [reference_jpeg(100), reference_jpeg(101)]
    sent = http.post(f"/v1/models/{MODEL}:predict", json=reference_request(*images), headers={"X-Request-Id": "r-42"})
    assert sent.status_code == 200 and sent.headers["x-request-id"] == "r-42"
    made = http.post(f"/v1/models/{MODEL}:predict", json=reference_request(images[0]))
    made_id = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_id)
    odd = http.post(
        f"/v1/models/{MODEL}:predict", json=reference_request(images[0]), headers={"X-Request-Id": "x" * 200}
    )
    assert odd.headers["x-request-id"] != "x" * 200
    lines = log_lines(log)
    mine = sorted((line for line in lines if line["request_id"] == "r-42"), key=lambda line: line["instance"])
    assert [line["instance"] for line in mine] == [0, 1]
    for line, prediction in zip(mine, sent.json()["predictions"], strict=True):
        assert set(line) == {"time", "request_id", "model", "version", "instance", "class", "confidence", "latency_ms"}
        assert (line["model"], line["version"], line["class"]) == (MODEL, 1, prediction["class_name"])
        assert line["confidence"] == pytest.approx(max(prediction["probabilities"]), rel=1e-5)
        assert 0 < line["latency_ms"] < 60_000
    assert [line["request_id"] for line in lines].count(made_id) == 1


@local_only
def test_the_log_is_rotated_within_its_bound(logging_server):
    """Past --prediction-log-max-bytes the log moves to .1 (then .2); no more than 2 are kept,
    none is larger than the bound, and every line is whole JSON."""
    http, log = logging_server
    for seed in range(80):  # about 200 bytes a line: 4 log files' worth
        response = http.post(f"/v1/models/{MODEL}:predict", json=reference_request(reference_jpeg(200 + seed)))
        assert response.status_code == 200
    files = sorted(path.name for path in log.parent.iterdir())
    assert files == [log.name, f"{log.name}.1", f"{log.name}.2"]
    for path in log.parent.iterdir():
        assert 0 < path.stat().st_size <= LOG_BYTES
    assert all(line["model"] == MODEL for line in log_lines(log))  # json.loads read every line


@local_only
def test_the_log_is_off_by_default(server_url):
    """Without --prediction-log an answer is TF Serving's: no X-Request-Id added, even when sent."""
    with httpx.Client(base_url=server_url, timeout=60) as http:
        headers = {"X-Request-Id": "r-1"}
        response = http.post(f"/v1/models/{MODEL}:predict", json=reference_request(reference_jpeg()), headers=headers)
    assert response.status_code == 200 and "x-request-id" not in response.headers


def test_bad_log_flags_are_one_line_errors(tmp_path):
    serve = [sys.executable, "-m", "jobs.serve", "--model-base-path", str(tmp_path), "--port", "0"]
    for flags, needle in (
        (["--prediction-log", str(tmp_path / "p.jsonl"), "--prediction-log-sample", "2"], "from 0 to 1, got '2'"),
        (["--prediction-log", str(tmp_path)], "is a folder"),
    ):
        proc = subprocess.run([*serve, *flags], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
        assert needle in one_line_error(proc)


def _info(key: str, dtype: str, shape) -> TensorInfo:
    return TensorInfo(key, f"{key}:0", dtype, shape)


def test_which_outputs_are_a_class_distribution():
    """The rule of signals.py: a float `probabilities` (or `probs`) of shape [-1, K], 2 <= K <= 100;
    its names from a string `class_name` of shape [-1] when there is one."""
    ours = {
        "probabilities": _info("probabilities", "DT_FLOAT", (-1, 10)),
        "class_id": _info("class_id", "DT_INT64", (-1,)),
        "class_name": _info("class_name", "DT_STRING", (-1,)),
    }

    def read(outputs):
        return reading(Signature("serving_default", "tensorflow/serving/predict", {}, outputs))

    assert read(ours) == Reading("probabilities", 10, "class_name")
    assert read({"probs": _info("probs", "DT_DOUBLE", (-1, 3))}) == Reading("probs", 3, None)
    for outputs in (
        {"y": _info("y", "DT_FLOAT", (-1, 1))},  # half_plus_two
        {"scores": _info("scores", "DT_FLOAT", (-1, 10))},  # classify's scores need not sum to 1
        {"probabilities": _info("probabilities", "DT_FLOAT", (-1, 1))},
        {"probabilities": _info("probabilities", "DT_FLOAT", (-1, 1000))},  # too many label values
        {"probabilities": _info("probabilities", "DT_FLOAT", (4, 10))},  # no batch dimension
        {"probabilities": _info("probabilities", "DT_INT64", (-1, 10))},
        {"probabilities": _info("probabilities", "DT_FLOAT", None)},
    ):
        assert read(outputs) is None, outputs
