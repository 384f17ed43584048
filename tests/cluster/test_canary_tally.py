"""The canary step's error rate is its own tally of the probes it sent, not TF Serving's
`request_count`, which the kubelet's readiness probes also feed.

TF Serving 2.20's REST server counts every call of a model in `request_count{model_name,
status}` (`model_servers/http_server.cc` ProcessRequest: `RecordModelRequestCount` after every
request; `servables/tensorflow/util.cc` defines the counter with those two labels only) and
records `request_latency{model_name, API, entrypoint}` for OK answers only. A pod that starts
during the canary window (a restart, a node drain) answers its readiness probe, `GET
/v1/models/fmnist/metadata`, with 404 NOT_FOUND until its version has loaded, and those count
as errors of the model. The stand-ins here are real HTTP servers on loopback that answer and
count as that source does; `jobs.release.canary.watch` runs against them unchanged.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs.release import canary
from jobs.release.canary_metrics import PROMOTE, ROLLBACK, Bounds, decide

BOUNDS_US = (1000, 5000, 25000)  # latency histogram bounds, microseconds
STATUS = {200: "OK", 404: "NOT_FOUND", 500: "INTERNAL"}


class StandIn(ThreadingHTTPServer):
    """TF Serving's REST surface as far as the canary step and a kubelet use it."""

    daemon_threads = True

    def __init__(self, fail_every: int = 0, loading: bool = False):
        super().__init__(("127.0.0.1", 0), Handler)
        self.fail_every = fail_every  # every n-th predict answers 500
        self.loading = loading  # metadata answers 404, as before a version is loaded
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.latency = [0] * (len(BOUNDS_US) + 1)
        self.predicts = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, code: int, predict_us: float | None) -> None:
        with self.lock:
            status = STATUS[code]
            self.counts[status] = self.counts.get(status, 0) + 1
            if code == 200 and predict_us is not None:
                for i, bound in enumerate(BOUNDS_US):
                    if predict_us <= bound:
                        self.latency[i] += 1
                        break
                else:
                    self.latency[-1] += 1

    def page(self) -> str:
        """util/prometheus_exporter.cc's text: '/' in names becomes ':', cumulative buckets."""
        with self.lock:
            lines = ["# TYPE :tensorflow:serving:request_count counter"]
            for status, n in sorted(self.counts.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="fmnist",status="{status}"}} {n}')
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            cumulative = 0
            labels = 'model_name="fmnist",API="predict",entrypoint="REST"'
            for bound, n in zip([*map(str, BOUNDS_US), "+Inf"], self.latency, strict=True):
                cumulative += n
                lines.append(f':tensorflow:serving:request_latency_bucket{{{labels},le="{bound}"}} {cumulative}')
            lines.append(f":tensorflow:serving:request_latency_sum{{{labels}}} {cumulative * 2000}")
            lines.append(f":tensorflow:serving:request_latency_count{{{labels}}} {cumulative}")
            return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, *args) -> None:
        pass

    def answer(self, code: int, body: dict | str, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == canary.METRICS_PATH:
            self.answer(200, self.server.page(), "text/plain; version=0.0.4")  # not a model call
            return
        if self.server.loading:
            code, body = 404, {"error": "Servable not found for request: Latest(fmnist)"}
        else:
            code, body = 200, {"model_spec": {"name": "fmnist", "version": "2"}, "metadata": {}}
        self.server.record(code, None)
        self.answer(code, body)

    def do_POST(self) -> None:
        start = time.monotonic()
        length = int(self.headers["Content-Length"])
        instances = json.loads(self.rfile.read(length))["instances"]
        with self.server.lock:
            self.server.predicts += 1
            failing = self.server.fail_every and self.server.predicts % self.server.fail_every == 0
        if failing:
            code, body = 500, {"error": "Internal: the canary is broken"}
        else:
            code, body = 200, {"predictions": [{"class_id": 0, "class_name": "T-shirt/top"} for _ in instances]}
        self.server.record(code, (time.monotonic() - start) * 1e6)
        self.answer(code, body)


class Kubelet(threading.Thread):
    """Readiness probes of a pod starting during the window: GET metadata every `period` s."""

    def __init__(self, url: str, period: float):
        super().__init__(daemon=True)
        self.url, self.period = url, period
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            with contextlib.suppress(OSError):  # 404: not ready yet
                urllib.request.urlopen(f"{self.url}/v1/models/fmnist/metadata", timeout=5).close()
            self.sent += 1


@pytest.fixture
def servers():
    made = []

    def make(**kwargs) -> StandIn:
        made.append(StandIn(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.shutdown()
        server.server_close()


IMAGES = [b"\x89PNG one image"]
BOUNDS = Bounds(min_requests=20)


def test_readiness_probes_of_a_starting_pod_are_not_the_canarys_errors(servers):
    stable, canary_server = servers(), servers(loading=True)
    kubelet = Kubelet(canary_server.url, period=0.02)
    kubelet.start()
    try:
        stable_window, canary_window = canary.watch(stable.url, canary_server.url, "fmnist", 2.0, IMAGES, 30)
    finally:
        kubelet.stopped.set()
        kubelet.join()
    assert kubelet.sent >= 20 and canary_server.counts["NOT_FOUND"] >= 20, "the server counted the probes as errors"
    assert canary_window.errors == 0 and canary_window.requests >= BOUNDS.min_requests
    assert stable_window.errors == 0 and stable_window.requests >= BOUNDS.min_requests
    assert canary_window.quantile(0.5) is not None, "latency still comes from the servers' histograms"
    decision = decide(stable_window, canary_window, BOUNDS)
    assert decision.outcome == PROMOTE, decision.reason


def test_a_canary_that_fails_predictions_is_rolled_back_on_the_tally(servers):
    stable, canary_server = servers(), servers(fail_every=3)
    stable_window, canary_window = canary.watch(stable.url, canary_server.url, "fmnist", 2.0, IMAGES, 30)
    assert canary_window.requests >= BOUNDS.min_requests
    assert canary_window.errors == canary_server.counts["INTERNAL"] > 0
    assert abs(canary_window.errors / canary_window.requests - 1 / 3) < 0.1
    decision = decide(stable_window, canary_window, BOUNDS)
    assert decision.outcome == ROLLBACK and "canary error rate" in decision.reason
