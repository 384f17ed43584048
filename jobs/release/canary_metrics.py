"""What a canary is judged on: predict requests, their errors and latency, read from a model
server's Prometheus page (`/monitoring/prometheus/metrics`), and the decision taken on them.

TF Serving 2.20 (`--monitoring_config_file` with `prometheus_config { enable: true }`, which
exports every TensorFlow monitoring metric, names with `/` turned into `:`) and the local server
(jobs/serving/metrics.py, the same series) are read alike:
    :tensorflow:serving:request_count{model_name, status}    every REST and gRPC request of the
        model, by its status code name (OK, INVALID_ARGUMENT, NOT_FOUND...), status and
        metadata calls (the readiness probe) included: the errors are the non-OK ones
    :tensorflow:serving:request_latency_bucket{model_name, API, entrypoint, le}
        wall time of *successful* requests in microseconds (model_servers/http_server.cc
        records it only for an OK status); API `predict` (REST) or `Predict` (gRPC): its
        `_count` is the successful predict requests

Counters only grow, so a window is the difference of two snapshots; a counter that went down
means the server restarted in between, and then its end value is the whole window.

The canary step (jobs.canary) judges latency from these pages, but requests and errors from
its own tally of the probe requests it sent: TF Serving's request_count also counts the
kubelet's readiness GETs, which a starting pod answers NOT_FOUND, and has no label to tell
them apart.
"""

from __future__ import annotations

import dataclasses
import math

from jobs.core.cli import JobError

TF_COUNT = ":tensorflow:serving:request_count"
TF_LATENCY = ":tensorflow:serving:request_latency"
MICROSECONDS = 1e-6


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Predict requests answered so far: `ok`, `errors`, and the latency histogram as
    cumulative counts per upper bound in seconds (`math.inf` last)."""

    ok: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def requests(self) -> float:
        return self.ok + self.errors

    def __add__(self, other: Snapshot) -> Snapshot:
        return Snapshot(self.ok + other.ok, self.errors + other.errors, _merge(self.buckets, other.buckets, 1.0))

    def since(self, start: Snapshot) -> Snapshot:
        """This snapshot minus an earlier one of the same server (a restart: all of this one)."""
        delta = Snapshot(self.ok - start.ok, self.errors - start.errors, _merge(self.buckets, start.buckets, -1.0))
        if delta.ok < 0 or delta.errors < 0 or any(count < 0 for _, count in delta.buckets):
            return self
        return delta

    def quantile(self, q: float) -> float | None:
        """The q-quantile of latency in seconds, interpolated within its bucket as Prometheus'
        histogram_quantile does (None: no observations; past the last bound: that bound)."""
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        rank = q * self.buckets[-1][1]
        lower, below = 0.0, 0.0
        for bound, count in self.buckets:
            if count >= rank and count > below:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (count - below)
            lower, below = (bound if not math.isinf(bound) else lower), count
        return lower


def _merge(a, b, sign: float) -> tuple[tuple[float, float], ...]:
    counts: dict[float, float] = dict(a)
    for bound, count in b:
        counts[bound] = counts.get(bound, 0.0) + sign * count
    return tuple(sorted(counts.items()))


def _bound(text: str, scale: float) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text) * scale


def parse(text: str, model: str) -> Snapshot:
    """A Snapshot of `model`'s predict requests from a model server's Prometheus text page. A
    page without TF Serving's series is an error (the URL is not a model server's)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = {family.name: family for family in text_string_to_metric_families(text)}
    except ValueError as err:
        raise JobError(f"the metrics page does not parse as Prometheus text: {err}") from None
    if TF_COUNT in families or TF_LATENCY in families:
        return _tf_serving(families, model)
    raise JobError(f"the metrics page has no {TF_COUNT}: not a model server's (TF Serving or jobs.serve)")


def _tf_serving(families: dict, model: str) -> Snapshot:
    errors = 0.0
    for sample in getattr(families.get(TF_COUNT), "samples", ()):
        if sample.labels.get("model_name") == model and sample.labels.get("status") != "OK":
            errors += sample.value
    ok, buckets = 0.0, {}
    for sample in getattr(families.get(TF_LATENCY), "samples", ()):
        labels = sample.labels
        if labels.get("model_name") != model or labels.get("API", "").lower() != "predict":
            continue
        if sample.name == TF_LATENCY + "_count":
            ok += sample.value
        elif sample.name == TF_LATENCY + "_bucket":
            bound = _bound(labels["le"], MICROSECONDS)
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Snapshot(ok, errors, tuple(sorted(buckets.items())))


def window(start: dict[str, Snapshot], end: dict[str, Snapshot]) -> Snapshot:
    """One track's requests in a window, from per-server snapshots keyed by address: a server
    seen only at the end started within it (all of its counts), one seen only at the start
    went away (its last counts are lost with it)."""
    total = Snapshot()
    for address, last in end.items():
        first = start.get(address)
        total = total + (last.since(first) if first is not None else last)
    return total


# -- the decision ---------------------------------------------------------------------------

PROMOTE, ROLLBACK, INCONCLUSIVE = "promote", "rollback", "inconclusive"


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What the canary must stay within, over the window, to be promoted."""

    max_error_rate: float = 0.01  # its errors / requests
    max_error_increase: float = 0.005  # its error rate minus the stable one's
    max_p50_ratio: float = 1.5  # its median latency / the stable one's
    max_p95_ratio: float = 2.0  # its 95th percentile / the stable one's
    min_requests: int = 50  # fewer on the canary: no decision

    def __post_init__(self):
        for name in ("max_error_rate", "max_error_increase"):
            if not 0 <= getattr(self, name) <= 1:
                raise JobError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for name in ("max_p50_ratio", "max_p95_ratio"):
            if not getattr(self, name) > 0:
                raise JobError(f"{name} must be above 0, got {getattr(self, name)}")
        if self.min_requests < 1:
            raise JobError(f"min_requests must be 1 or more, got {self.min_requests}")


@dataclasses.dataclass(frozen=True)
class Decision:
    outcome: str  # promote, rollback, inconclusive
    reasons: tuple[str, ...]
    figures: dict

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def figures(track: Snapshot) -> dict:
    rate = track.errors / track.requests if track.requests else None
    return {
        "requests": int(track.requests),
        "errors": int(track.errors),
        "error_rate": rate,
        "p50_seconds": track.quantile(0.5),
        "p95_seconds": track.quantile(0.95),
    }


def decide(stable: Snapshot, canary: Snapshot, bounds: Bounds) -> Decision:
    """Promote, roll back, or inconclusive (too few canary requests), with the reasons: every
    bound the canary broke, or what it was within."""
    s, c = figures(stable), figures(canary)
    shown = {"stable": s, "canary": c}
    if c["requests"] < bounds.min_requests:
        why = f"the canary answered {c['requests']} predict requests, fewer than the {bounds.min_requests} needed"
        return Decision(INCONCLUSIVE, (why,), shown)
    broken, within = [], []
    rate = c["error_rate"]
    (broken if rate > bounds.max_error_rate else within).append(
        f"canary error rate {rate:.2%} {'above' if rate > bounds.max_error_rate else 'within'} "
        f"{bounds.max_error_rate:.2%}"
    )
    comparable = s["requests"] >= bounds.min_requests
    if not comparable:
        within.append(f"stable answered only {s['requests']} requests: no comparison with it")
    else:
        increase = rate - s["error_rate"]
        over = increase > bounds.max_error_increase
        (broken if over else within).append(
            f"error rate {increase:+.2%} against stable ({s['error_rate']:.2%}), "
            f"{'above' if over else 'within'} +{bounds.max_error_increase:.2%}"
        )
        for q, limit in (("p50", bounds.max_p50_ratio), ("p95", bounds.max_p95_ratio)):
            ours, theirs = c[f"{q}_seconds"], s[f"{q}_seconds"]
            if ours is None or not theirs:
                within.append(f"{q} latency not comparable (no successful requests on one side)")
                continue
            ratio = ours / theirs
            shown[f"{q}_ratio"] = ratio
            (broken if ratio > limit else within).append(
                f"{q} latency {ours * 1000:.1f} ms = {ratio:.2f}× stable's {theirs * 1000:.1f} ms, "
                f"{'above' if ratio > limit else 'within'} {limit:g}×"
            )
    if broken:
        return Decision(ROLLBACK, tuple(broken), shown)
    return Decision(PROMOTE, tuple(within), shown)
