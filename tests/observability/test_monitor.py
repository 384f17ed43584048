"""`make monitor` (hack/monitor.sh): the Prometheus the OS provides, watching real local model
servers. The local runner's servers of a canary rollout (jobs.local.runner's Runner.server, both
tracks) list themselves for it; Prometheus scrapes both with their track, loads exactly the
rules of monitoring/rules/, evaluates them on what it scrapes (a server killed is
FmnistModelServerDown, pending), and Ctrl-C stops it. `make serve` lists its server too, and
unlists it when it stops; bad knobs and a missing Prometheus are one line each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobs.core import serving_config
from jobs.core.paths import Work
from jobs.local.processes import free_ports
from jobs.local.runner import Runner
from jobs.local.settings import Settings
from monitoring import series
from tests.helpers import ROOT
from tests.observability.rules import load, rule_files

pytestmark = pytest.mark.slow

WAIT = 90.0


def until(what: str, check, timeout: float = WAIT, every: float = 0.5):
    """check()'s first truthy answer, or a failure naming what did not happen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what} within {timeout:.0f} s (last: {last})")


def env(work: Path, **extra: str) -> dict[str, str]:
    names = ("WORK_DIR", "MONITOR_PORT", "GRAFANA_PORT", "PORT")
    variables = {k: v for k, v in os.environ.items() if k not in names}
    variables["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{variables['PATH']}"
    return {**variables, "WORK_DIR": str(work), **extra}


class Monitor:
    def __init__(self, work: Path, log: Path):
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["hack/monitor.sh"],
                cwd=ROOT,
                env=env(work, MONITOR_PORT=str(self.port), GRAFANA_PORT=str(free_ports(1)[0])),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def api(self, path: str, **params) -> dict:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def ctrl_c(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"make monitor did not stop within {timeout} s of Ctrl-C:\n{self.log.read_text()[-2000:]}")
        return time.monotonic() - started


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("monitor") / "work"
    (root / "models" / "fmnist").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def servers(work):
    """The local runner's model servers of a canary rollout, as `make local ROLLOUT=canary`
    starts them for its serving steps (no version yet)."""
    settings = Settings(
        work=Work(work),
        run_id="run-1",
        dataset="synthetic",
        epochs=1,
        workers=1,
        models=["cnn"],
        min_accuracy=0.5,
        max_restarts=0,
        python=sys.executable,
        extra={},
        rollout="canary",
    )
    runner = Runner(settings)
    with runner.server():
        yield runner
    assert not list(Work(work).scrape_targets.glob("*.json")), "the runner unlists its servers when they stop"


@pytest.fixture(scope="module")
def monitor(work, servers, tmp_path_factory):
    monitor = Monitor(work, tmp_path_factory.mktemp("monitor-log") / "monitor.log")
    until("Prometheus answers", lambda: _ready(monitor))
    yield monitor
    if monitor.proc.poll() is None:
        monitor.ctrl_c()


def _ready(monitor: Monitor) -> bool:
    if monitor.proc.poll() is not None:
        pytest.fail(f"make monitor exited {monitor.proc.returncode}:\n{monitor.log.read_text()[-2000:]}")
    try:
        return httpx.get(f"{monitor.url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_runner_lists_both_tracks(work, servers):
    listed = json.loads((Work(work).scrape_targets / "local-run-1.json").read_text())
    tracks = {entry["labels"]["track"]: entry["targets"] for entry in listed}
    assert set(tracks) == {"stable", "canary"}
    assert tracks["stable"] == [servers.stable_url.removeprefix("http://")]
    assert tracks["canary"] == [servers.url.removeprefix("http://")]


def test_prometheus_scrapes_both_tracks(monitor, servers):
    def up():
        return {r["metric"]["track"]: r["value"][1] for r in monitor.query('up{job="tf-serving"}')}

    assert until("both servers are scraped", lambda: up() if up() == {"stable": "1", "canary": "1"} else None)
    targets = monitor.api("targets")["activeTargets"]
    assert {t["labels"]["instance"] for t in targets} == {
        servers.stable_url.removeprefix("http://"),
        servers.url.removeprefix("http://"),
    }
    assert {t["labels"]["run"] for t in targets} == {"run-1"}


def test_prometheus_loads_the_projects_rules(monitor):
    groups = monitor.api("rules")["groups"]
    expected = {g["name"]: len(g["rules"]) for path in rule_files() for g in load(path)["groups"]}
    assert {g["name"]: len(g["rules"]) for g in groups} == expected
    assert all(rule["health"] in ("ok", "unknown") for g in groups for rule in g["rules"]), groups


def test_the_local_servers_own_series_are_scraped(monitor, servers):
    """The queue, batching, limits and version series the dashboards read, as the local server
    writes them: each on its page with its type, and scraped (a labelled counter has no series
    before its first count: the drops)."""
    local = [s for s in series.ALL if s.source.startswith(series.LOCAL)]
    page = httpx.get(f"{servers.url}/monitoring/prometheus/metrics", timeout=10).text
    for s in local:
        assert f"# TYPE {s.name} {s.kind}\n" in page, s.name
    expected = {name for s in local if s.labels in ((), ("model",)) for name in s.names()}

    def scraped():
        found = monitor.query('count by (__name__) ({job="tf-serving", __name__=~"serving_.*"})')
        return {r["metric"]["__name__"] for r in found}

    until(f"the local server's own series {sorted(expected)} are scraped", lambda: expected <= scraped(), timeout=30)


def test_the_local_servers_write_tf_servings_series(monitor, servers, work, untrained_model):
    """The series the rules read from TF Serving, scraped from the local servers once a version
    is loaded and answers (TF Serving writes a labelled series at its first record), and what
    the model predicted."""
    shutil.copytree(untrained_model, work / "models" / "fmnist" / "1")
    for track in ("stable", "canary"):
        serving_config.pin(Work(work), track, 1)
    body = {"signature_name": "pixels", "instances": [[[0] * 28] * 28]}

    def answered():
        try:
            answer = httpx.post(f"{servers.url}/v1/models/fmnist/versions/1:predict", json=body, timeout=10)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    until("the servers load version 1 and answer a predict", answered, timeout=120)
    predictions = (series.LOCAL_PREDICTIONS, series.LOCAL_CONFIDENCE)  # the dashboard's predictions row
    for s in (series.REQUEST_COUNT, series.REQUEST_LATENCY, series.LOAD_ATTEMPTS, *predictions):
        until(
            f"{s.name} is scraped",
            lambda s=s: monitor.query(f'count({{job="tf-serving", __name__=~"{s.name}.*"}})'),
            timeout=60,
        )


def test_a_killed_server_is_reported(monitor, servers):
    """A fault: the canary server dies (its entry stays listed, as after a SIGKILL). Prometheus
    sees it down and FmnistModelServerDown turns pending at the next evaluation (it fires after
    its `for: 2m`)."""
    canary = next(
        child for child in servers.children if "--port" in child.argv and servers.url.endswith(child.argv[-3])
    )
    os.killpg(canary.popen.pid, signal.SIGKILL)
    canary.wait()

    def pending():
        alerts = monitor.api("alerts")["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "FmnistModelServerDown" and a["labels"]["track"] == "canary"
        ]

    alerts = until("FmnistModelServerDown is pending for the canary", pending, timeout=60)
    assert alerts[0]["state"] == "pending" and alerts[0]["labels"]["severity"] == "warning"
    # The stable server is still up (a scrape may time out on a loaded machine: it recovers).
    until("the stable server is up", lambda: monitor.query('up{job="tf-serving", track="stable"} == 1'), timeout=30)


def test_ctrl_c_stops_it(monitor):
    seconds = monitor.ctrl_c()
    assert monitor.proc.returncode in (0, 130), monitor.log.read_text()[-2000:]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", monitor.port)) != 0, "Prometheus still listens"
    assert seconds < 15
    assert "stopped" in monitor.log.read_text()


def test_make_serve_lists_its_server_while_it_runs(tmp_path):
    work = tmp_path / "work"
    (work / "models" / "fmnist").mkdir(parents=True)
    port = free_ports(1)[0]
    listed = Work(work).scrape_targets / f"serve-{port}.json"
    proc = subprocess.Popen(
        ["hack/serve.sh"],
        cwd=ROOT,
        env=env(work, PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        until("make serve lists its server", listed.exists, timeout=60)
        assert json.loads(listed.read_text()) == [{"targets": [f"127.0.0.1:{port}"], "labels": {"track": "serve"}}]
        until("the server answers", lambda: _answers(port), timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    assert not listed.exists(), "Ctrl-C unlists it"


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("knobs", "says"),
    [
        ({"MONITOR_PORT": "nine"}, "MONITOR_PORT must be a port number, not 'nine'"),
        ({"MONITOR_PORT": "70000"}, "MONITOR_PORT must be a port number, not '70000'"),
    ],
)
def test_bad_knobs_are_one_line(tmp_path, knobs, says):
    proc = subprocess.run(
        ["hack/monitor.sh"], cwd=ROOT, env=env(tmp_path, **knobs), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {says}", proc.stderr


def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            ["hack/monitor.sh"], cwd=ROOT, env=env(tmp_path, MONITOR_PORT=str(port)), capture_output=True, text=True
        )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"port {port} is taken" in proc.stderr and f"MONITOR_PORT={port + 1}" in proc.stderr


def test_no_prometheus_is_one_line(tmp_path):
    """Without Prometheus on PATH: one line saying how the OS installs it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "uname", "sed", "head", "sort", "curl", "mkdir"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    proc = subprocess.run(
        ["bash", "hack/monitor.sh"],
        cwd=ROOT,
        env={**env(tmp_path), "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: promtool not found: sudo apt-get install --no-install-recommends prometheus")
    assert proc.stderr.count("\n") == 1 and "brew install prometheus on macOS" in proc.stderr
