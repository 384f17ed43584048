"""The MLflow server runs here exactly as the rendered Deployment says (its command, args and
env; the volume mount paths mapped to temp dirs; bound to loopback on a free port instead of
0.0.0.0:5000): its process tree stays well under the container's memory limit, /health
answers, and a tracking call with the Host header the pipeline's pods send is served.

MLflow 3.17 with a SQL store also starts a job runner and its consumer processes unless
MLFLOW_SERVER_ENABLE_JOB_EXECUTION is false (mlflow/server/__init__.py, the job execution
check in _run_server; measured here: about 1.6 GiB and 10 processes with it, against a 1 GiB
limit). Nothing in the pipeline uses server-side jobs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from jobs.local.processes import free_ports
from tests.cluster.test_parity_run import MIB, quantity_bytes, tree_rss

pytestmark = pytest.mark.slow

START_TIMEOUT = 300
BUDGET = 0.8  # the peak may use this much of the memory limit


def mlflow_container(overlay) -> tuple[dict, dict]:
    d = next(d for d in overlay if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    spec = d["spec"]["template"]["spec"]
    return spec, next(c for c in spec["containers"] if c["name"] == "mlflow")


def mapped(text: str, mounts: dict[str, Path]) -> str:
    """Every mount path inside an argument or value replaced by its temp dir, in one pass (a
    temp dir under /tmp is not mapped again by a mount at /tmp)."""
    if not mounts:
        return text
    paths = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({paths})(?=/|$)", lambda m: str(mounts[m[1]]), text)


def test_mlflow_runs_as_rendered_under_its_memory_limit(tmp_path, overlay):
    spec, c = mlflow_container(overlay)
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in c["volumeMounts"]}
    for local in mounts.values():
        local.mkdir()
    [port] = free_ports(1)
    args = []
    for arg in c["args"]:
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        args.append(mapped(arg, mounts))
    assert c["command"][0] == "mlflow"
    argv = [str(Path(sys.executable).with_name("mlflow")), *c["command"][1:], *args]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    env.update({e["name"]: mapped(e["value"], mounts) for e in c.get("env", [])})
    assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
    limit = quantity_bytes(c["resources"]["limits"]["memory"])

    log = tmp_path / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    watched = psutil.Process(proc.pid)
    peak, processes = 0, 0
    url = f"http://127.0.0.1:{port}"

    def sample() -> None:
        nonlocal peak, processes
        peak = max(peak, tree_rss(watched))
        with contextlib.suppress(psutil.NoSuchProcess):
            processes = max(processes, 1 + len(watched.children(recursive=True)))

    try:
        started = time.monotonic()
        while True:
            sample()
            assert proc.poll() is None, f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() - started < START_TIMEOUT, (
                f"no /health within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.25)
        # The Host header a pipeline pod sends (http://mlflow:5000 in the namespace), and the
        # service's qualified name; another host is refused (--allowed-hosts is on).
        for host in ("mlflow:5000", "mlflow.fmnist.svc:5000"):
            created = httpx.post(
                f"{url}/api/2.0/mlflow/experiments/create",
                json={"name": f"probe-{host}"},
                headers={"Host": host},
                timeout=30,
            )
            assert created.status_code == 200, (host, created.status_code, created.text)
            run = httpx.post(
                f"{url}/api/2.0/mlflow/runs/create",
                json={"experiment_id": created.json()["experiment_id"]},
                headers={"Host": host},
                timeout=30,
            )
            assert run.status_code == 200, run.text
            metric = httpx.post(
                f"{url}/api/2.0/mlflow/runs/log-metric",
                json={"run_id": run.json()["run"]["info"]["run_id"], "key": "accuracy", "value": 0.9, "timestamp": 0},
                headers={"Host": host},
                timeout=30,
            )
            assert metric.status_code == 200, metric.text
            sample()
        refused = httpx.get(
            f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "other.svc:5000"}, timeout=30
        )
        assert refused.status_code == 403
        for _ in range(8):  # a few more seconds of steady state
            sample()
            time.sleep(0.25)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    print(f"\n[mlflow] peak resident {peak / MIB:.0f} MiB in up to {processes} processes; limit {limit / MIB:.0f} MiB")
    assert peak < BUDGET * limit, f"peak {peak / MIB:.0f} MiB is over {BUDGET:.0%} of the {limit / MIB:.0f} MiB limit"
