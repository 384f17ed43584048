"""The canary's pure parts: reading both servers' Prometheus pages, windows of counters (a
restart included), latency quantiles, the decision and its bounds, the serving configs' pins.
tests/pipeline/test_canary_serving.py runs the whole step against two real servers."""

from __future__ import annotations

import math

import pytest

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.paths import Work
from jobs.release.canary_metrics import INCONCLUSIVE, PROMOTE, ROLLBACK, Bounds, Snapshot, decide, parse, window

# A page in TF Serving 2.20's format (util/prometheus_exporter.cc: `/` in names becomes `:`,
# histograms cumulative with le="+Inf" last, latency in microseconds; request_count carries
# model_name and status, request_latency model_name, API and entrypoint).
TF_PAGE = """\
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="fmnist",status="OK"} 130
:tensorflow:serving:request_count{model_name="fmnist",status="INVALID_ARGUMENT"} 3
:tensorflow:serving:request_count{model_name="fmnist",status="NOT_FOUND"} 1
:tensorflow:serving:request_count{model_name="other",status="INTERNAL"} 50
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="fmnist",API="predict",entrypoint="REST",le="1000"} 10
:tensorflow:serving:request_latency_bucket{model_name="fmnist",API="predict",entrypoint="REST",le="2000"} 90
:tensorflow:serving:request_latency_bucket{model_name="fmnist",API="predict",entrypoint="REST",le="+Inf"} 100
:tensorflow:serving:request_latency_sum{model_name="fmnist",API="predict",entrypoint="REST"} 150000
:tensorflow:serving:request_latency_count{model_name="fmnist",API="predict",entrypoint="REST"} 100
:tensorflow:serving:request_latency_bucket{model_name="fmnist",API="GetModelMetadata",entrypoint="REST",le="+Inf"} 30
:tensorflow:serving:request_latency_count{model_name="fmnist",API="GetModelMetadata",entrypoint="REST"} 30
# TYPE :tensorflow:core:graph_runs counter
:tensorflow:core:graph_runs{} 7
"""


def test_tf_serving_page_counts_predict_successes_and_every_error_of_the_model():
    snap = parse(TF_PAGE, "fmnist")
    assert snap.ok == 100  # predict's latency count; the metadata calls (readiness probe) are not
    assert snap.errors == 4  # every non-OK status of fmnist, none of `other`
    assert snap.buckets == ((0.001, 10.0), (0.002, 90.0), (math.inf, 100.0))  # microseconds -> s


def test_the_local_server_page_reads_as_tf_servings():
    """The local server exports TF Serving's series (jobs/serving/metrics.py): one reading."""
    from jobs.serving.metrics import Metrics

    metrics = Metrics()
    for _ in range(8):
        metrics.request("fmnist", "OK", "predict", 0.004)
    metrics.request("fmnist", "INVALID_ARGUMENT", "predict", 0.001)
    metrics.request("fmnist", "INTERNAL", "predict", 0.03)
    metrics.request("fmnist", "OK", "", 0.0001)  # a status call: no prediction
    snap = parse(metrics.page().decode(), "fmnist")
    assert (snap.ok, snap.errors) == (8, 2)
    assert dict(snap.buckets)[math.inf] == 8  # latency of the successful predictions only
    # µs bounds 10 × 1.8^i: 4 ms is above 3570.47 µs and below 6426.84 µs
    assert [count for bound, count in snap.buckets if 0.0035 < bound < 0.0065] == [0, 8]


@pytest.mark.parametrize(
    "page,needle",
    [
        ("# TYPE x counter\nx_total 1\n", "no :tensorflow:serving:request_count"),
        ("what is this {\n", "does not parse"),
    ],
)
def test_a_page_of_no_model_server_is_an_error(page, needle):
    with pytest.raises(JobError, match=needle):
        parse(page, "fmnist")


def test_a_window_is_the_difference_and_a_restart_counts_from_zero():
    start = Snapshot(100, 2, ((0.01, 90), (math.inf, 100)))
    end = Snapshot(160, 5, ((0.01, 140), (math.inf, 160)))
    assert end.since(start) == Snapshot(60, 3, ((0.01, 50), (math.inf, 60)))
    restarted = Snapshot(20, 0, ((0.01, 20), (math.inf, 20)))
    assert restarted.since(start) == restarted


def test_a_track_window_sums_its_pods_those_that_came_and_not_those_that_went():
    a0, a1 = Snapshot(10, 0), Snapshot(30, 1)
    gone = Snapshot(500, 50)
    new = Snapshot(7, 0)
    total = window({"a": a0, "gone": gone}, {"a": a1, "new": new})
    assert (total.ok, total.errors) == (27, 1)


def test_quantiles_interpolate_within_their_bucket():
    snap = Snapshot(100, 0, ((0.01, 50), (0.02, 100), (math.inf, 100)))
    assert snap.quantile(0.5) == pytest.approx(0.01)
    assert snap.quantile(0.75) == pytest.approx(0.015)
    assert Snapshot(5, 0, ((0.01, 0), (math.inf, 5))).quantile(0.5) == 0.01  # past the last bound
    assert Snapshot().quantile(0.5) is None


def fast(ok: int, errors: int = 0, seconds: float = 0.004) -> Snapshot:
    """`ok` successes all in the bucket up to `seconds`."""
    return Snapshot(ok, errors, ((seconds / 2, 0), (seconds, ok + errors), (math.inf, ok + errors)))


BOUNDS = Bounds(max_error_rate=0.05, max_error_increase=0.02, max_p50_ratio=1.5, max_p95_ratio=2.0, min_requests=50)


def test_a_canary_like_the_stable_one_is_promoted():
    decision = decide(fast(500, 1), fast(200, 0), BOUNDS)
    assert decision.outcome == PROMOTE, decision.reason
    assert decision.figures["canary"]["requests"] == 200 and decision.figures["p95_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "stable,canary,needle",
    [
        (fast(500), fast(180, 20), "canary error rate 10.00% above 5.00%"),  # absolute
        (fast(500), fast(194, 6), "error rate +3.00% against stable"),  # relative
        (fast(500), fast(200, seconds=0.016), "p50 latency"),  # 4x slower
    ],
)
def test_a_canary_past_a_bound_is_rolled_back_saying_which(stable, canary, needle):
    decision = decide(stable, canary, BOUNDS)
    assert decision.outcome == ROLLBACK
    assert needle in decision.reason, decision.reason


def test_too_few_canary_requests_decide_nothing():
    decision = decide(fast(500), fast(49), BOUNDS)
    assert decision.outcome == INCONCLUSIVE and "49" in decision.reason


def test_a_quiet_stable_track_leaves_the_absolute_bounds_only():
    decision = decide(fast(3), fast(100, seconds=1.0), BOUNDS)
    assert decision.outcome == PROMOTE
    assert "no comparison" in decision.reason


@pytest.mark.parametrize(
    "kwargs", [{"max_error_rate": 1.5}, {"max_p95_ratio": 0}, {"min_requests": 0}, {"max_error_increase": -0.1}]
)
def test_bounds_out_of_range_are_refused(kwargs):
    with pytest.raises(JobError):
        Bounds(**kwargs)


def test_pins_written_per_track_are_read_back(tmp_path):
    work = Work(tmp_path)
    for version in (1, 2, 3):
        (work.served() / str(version)).mkdir(parents=True)
    assert serving_config.served_version(work) == 3  # nothing written: the highest
    serving_config.pin(work, "stable", 2)
    serving_config.pin(work, "canary", 3)
    assert serving_config.pinned(serving_config.path(work)) == (2,)
    assert serving_config.pinned(serving_config.track_path(work, "canary")) == (3,)
    assert serving_config.served_version(work) == 2
    serving_config.serve_latest(work)
    assert serving_config.pinned(serving_config.path(work)) == ()
    assert serving_config.served_version(work) == 3
    serving_config.write(serving_config.path(work), serving_config.PLACEHOLDER)
    assert serving_config.pinned(serving_config.path(work)) is None
    with pytest.raises(JobError, match="unknown serving track"):
        serving_config.track_path(work, "blue")


def test_a_name_is_every_address_it_resolves_to_of_one_family():
    from jobs.release.canary import addresses

    assert addresses("http://127.0.0.1:8501") == ["http://127.0.0.1:8501"]
    assert addresses("http://localhost:8501/") == ["http://127.0.0.1:8501"]  # not ::1 as well
    with pytest.raises(JobError, match="cannot resolve"):
        addresses("http://no-such-host.invalid:8501")
