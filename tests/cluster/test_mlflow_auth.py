"""The cluster overlay's MLflow, behind MLflow's own login, run here as rendered: its command,
args and env with the Secret's keys filled in, its config file from the rendered ConfigMap,
the mount paths mapped to temp dirs, loopback instead of 0.0.0.0.

MLflow 3.17.2's basic-auth app (`mlflow/server/auth/__init__.py`): `/health` is outside the
login (`_UNPROTECTED_PATH_PREFIXES`, so the probes pass), every other request needs HTTP basic
credentials (401 without), the admin is created on the first start from
MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, users and permissions live in `database_uri`
(`auth/config.py`). MLflow's client sends MLFLOW_TRACKING_USERNAME/PASSWORD itself, which is
how the pipeline's pods log in (workflows/e2e.yaml); a user without MANAGE on a registered
model cannot move its alias `champion`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from jobs.local.processes import free_ports
from tests.cluster import workflow
from tests.cluster.test_mlflow_run import START_TIMEOUT, mapped, mlflow_container

pytestmark = pytest.mark.slow

pytest.importorskip("flask_wtf", reason="Flask-WTF (mlflow[auth]) is not installed: make venv-dev")

SECRET = {"username": "admin", "password": "a-long-test-password", "secret-key": "0123456789abcdef"}


def env_of(container: dict, mounts: dict[str, Path], secret: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet sets it: values mapped, Secret keys filled in (an
    optional key of a missing Secret: the variable is not set)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = mapped(e["value"], mounts)
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["name"] == "mlflow-auth" and secret:
                env[e["name"]] = secret[ref["key"]]
            else:
                assert ref.get("optional"), f"{e['name']} needs the Secret {ref['name']}"
    return env


@pytest.fixture(scope="module")
def server(rendered, tmp_path_factory):
    docs = rendered["overlays/cluster"]
    spec, c = mlflow_container(docs)
    assert c["image"].endswith("-full"), "the image with mlflow[auth]"
    assert "--app-name=basic-auth" in c["args"]
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    mounts = {m["mountPath"]: tmp / m["name"] for m in c["volumeMounts"]}
    for local in mounts.values():
        local.mkdir()
    # The config file: the rendered ConfigMap's data, written where it is mounted.
    [volume] = [v for v in spec["volumes"] if v["name"] == "auth-config"]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])
    for name, text in config["data"].items():
        (mounts["/etc/mlflow-auth"] / name).write_text(mapped(text, mounts))
    [port] = free_ports(1)
    args = [
        "--host=127.0.0.1" if a.startswith("--host=") else f"--port={port}" if a.startswith("--port=") else a
        for a in (mapped(a, mounts) for a in c["args"])
    ]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **env_of(c, mounts, SECRET)}
    log = tmp / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), *c["command"][1:], *args],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            assert proc.poll() is None, f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() - started < START_TIMEOUT, log.read_text()[-3000:]
            time.sleep(0.25)
        yield url, mounts
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_only_the_probes_path_is_open(server):
    url, mounts = server
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert httpx.get(url + SEARCH, timeout=10).status_code == 401
    assert httpx.get(url + SEARCH, auth=("admin", "wrong-password-here"), timeout=10).status_code == 401
    ok = httpx.get(url + SEARCH, auth=(SECRET["username"], SECRET["password"]), headers={"Host": "mlflow:5000"})
    assert ok.status_code == 200, ok.text
    assert (mounts["/mlflow"] / "basic_auth.db").is_file(), "the user database is on MLflow's volume"


def track(url: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """What a pipeline step does with MLflow: an experiment, a run, a metric, an artifact."""
    code = textwrap.dedent(
        """
        import pathlib, sys, tempfile, mlflow
        from mlflow.tracking import MlflowClient
        client = MlflowClient()
        experiment = client.create_experiment(sys.argv[1])
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        folder = pathlib.Path(tempfile.mkdtemp())
        (folder / "report.md").write_text("hello")
        client.log_artifact(run.info.run_id, str(folder / "report.md"))
        print("logged", [a.path for a in client.list_artifacts(run.info.run_id)])
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, f"probe-{len(env)}"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "MLFLOW_TRACKING_URI": url, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_pipelines_pods_log_in_with_the_secrets_credentials(server, wf):
    url, _ = server
    ingest = workflow.templates(wf)["ingest"]["container"]
    env = {
        k: v
        for k, v in env_of(ingest, {}, SECRET).items()
        if k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    assert env == {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET["password"]}
    logged = track(url, {**env, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert logged.returncode == 0 and "report.md" in logged.stdout, logged.stderr[-3000:]
    # The same pods without the Secret (k3d) send no credentials: refused here.
    assert env_of(ingest, {}, {}).get("MLFLOW_TRACKING_USERNAME") is None
    refused = track(url, {"MLFLOW_DISABLE_TELEMETRY": "true"})
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout


def test_another_user_may_read_but_not_move_champion(server):
    url, _ = server
    admin = (SECRET["username"], SECRET["password"])
    created = httpx.post(
        f"{url}/api/2.0/mlflow/users/create", json={"username": "reader", "password": "reader-password-1"}, auth=admin
    )
    assert created.status_code == 200, created.text
    model = httpx.post(f"{url}/api/2.0/mlflow/registered-models/create", json={"name": "fmnist"}, auth=admin)
    assert model.status_code == 200, model.text
    reader = ("reader", "reader-password-1")
    assert httpx.get(f"{url}/api/2.0/mlflow/registered-models/get?name=fmnist", auth=reader).status_code == 200
    moved = httpx.post(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        json={"name": "fmnist", "alias": "champion", "version": "1"},
        auth=reader,
    )
    assert moved.status_code == 403, moved.text
