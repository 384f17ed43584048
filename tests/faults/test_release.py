"""Release state against a real model server (jobs.serve on loopback) and a real MLflow store:
rolling back from a version that never loaded, and to one that does not load (the alias moves
only after the check), the before-check that tells this work dir's server from another's, the
server's word on corrupt state once per change, and a failed run that closes its canary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.core.files import write_json
from jobs.core.paths import Work, versions
from tests.faults.test_serving import garbage_graph
from tests.helpers import ROOT
from tests.helpers.faults import wait_for
from tests.helpers.jobs import assert_one_line_error, job_env, run_job
from tests.pipeline.test_rollback import fake_versions
from tests.serving.conftest import LocalServer

pytestmark = pytest.mark.slow


def version(work: Work, number: int, model: Path, registered: str, damage=None) -> None:
    folder = work.served() / str(number)
    shutil.copytree(model, folder)
    if damage is not None:
        damage(folder)
    record = {"model": "cnn", "run_id": f"r{number}", "dataset": "synthetic", "registered_version": registered}
    write_json(folder / "promotion.json", record)


def make_rollback(work: Work, url: str, mlflow_uri: str, **knobs: str) -> subprocess.CompletedProcess:
    """`make rollback`'s script, as the Makefile runs it."""
    env = job_env(
        WORK_DIR=str(work.root),
        PREDICT_URL=url,
        VENV=os.path.dirname(os.path.dirname(sys.executable)),
        MLFLOW_TRACKING_URI=mlflow_uri,
        **knobs,
    )
    return subprocess.run(["hack/rollback.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_rollback_from_and_to_a_version_that_does_not_load(ingested, untrained_model, mlflow_uri, tmp_path):
    """v1, v2 good, v3 broken (the server serves v2). `make rollback` used to refuse ("serves 2,
    not version 3"); now it rolls back from the version that never loaded. Then `TO=3` (a
    version that does not load) fails its check with champion left where it was (it used to
    move first), and a plain `make rollback` is the way out. Last, the before-check refuses a
    server that serves the same version number from another work dir."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    client.create_registered_model("fmnist")
    work = Work(ingested)
    for number in (1, 2, 3):
        client.create_model_version("fmnist", (work.served() / str(number)).as_uri())
    client.set_registered_model_alias("fmnist", "champion", "2")
    version(work, 1, untrained_model, "1")
    version(work, 2, untrained_model, "2")
    server = LocalServer(work.served(), tmp_path / "serve.log", "--load-retries", "0").start(expect_version=2)
    try:
        staged = tmp_path / "staged"
        version(Work(staged), 3, untrained_model, "3", garbage_graph)
        os.rename(staged / "models" / "fmnist" / "3", work.served() / "3")  # renamed in whole, as promote does
        wait_for(lambda: "version 3 failed to load" in server.log(), 120, "version 3 to fail to load")
        out = make_rollback(work, server.url, mlflow_uri, REASON="v3 never loaded")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "version 3 never loaded" in out.stderr
        assert json.loads((work.served() / "4" / "promotion.json").read_text())["restored_from"] == 2

        broken = make_rollback(work, server.url, mlflow_uri, REASON="try v3 again", TO="3")
        assert_one_line_error(broken, "version 5 (version 3's model) was published", "champion was not moved")
        assert "make rollback REASON=" in broken.stderr
        assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "2"

        out = make_rollback(work, server.url, mlflow_uri, REASON="v5 does not load")
        assert out.returncode == 0, out.stderr[-3000:]
        six = json.loads((work.served() / "6" / "promotion.json").read_text())
        assert (six["rollback_of"], six["restored_from"], six["origin"]) == (5, 4, 2)
        assert str(client.get_model_version_by_alias("fmnist", "champion").version) == "2"

        other = Work(tmp_path / "other")
        fake_versions(other, 6)  # its newest is "version 6" too, as the server's
        proc = run_job("rollback", "--work-dir", other.root, "--reason", "x", "--url", server.url)
        assert_one_line_error(proc, f"loaded version 6 from {work.served() / '6'}", "nothing was rolled back")
        assert list(versions(other.served())) == [1, 2, 3, 4, 5, 6]
    finally:
        server.stop()


def test_the_server_says_what_is_wrong_with_the_state_once_per_change(untrained_model, tmp_path):
    """A symlink loop among the version folders, and a model config that is not text: the
    server used to log a traceback on every poll; now one line each time the state changes."""
    base = tmp_path / "models" / "fmnist"
    base.mkdir(parents=True)
    shutil.copytree(untrained_model, base / "1")
    os.symlink("7", base / "7")
    config = tmp_path / "models" / "serving.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "fmnist" base_path: "{base}" model_platform: "tensorflow" }} }}\n'
    )
    log_path = tmp_path / "serve.log"
    server = LocalServer(base, log_path, "--model-config-file", str(config)).start(expect_version=1)
    try:
        config.write_bytes(b"model_config_list {\xff\xfe")
        time.sleep(3)  # many polls (0.2 s each)
    finally:
        server.stop()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text
    assert text.count(f"{base / '7'} cannot be read") == 1, text[-3000:]
    assert text.count(f"cannot read the model config {config}") == 1, text[-3000:]


def test_a_run_whose_smoke_check_fails_closes_its_canary(ingested, untrained_model, tmp_path):
    """ROLLOUT=canary and a smoke check that cannot pass: the run used to exit with canary.json,
    both pins and the alias left, and every later run waited 10 minutes for a version. Now it
    rolls its canary back before it exits, and the next run is not held back."""
    work = Work(ingested)
    version(work, 1, untrained_model, None)
    proc = run_job(
        "local",
        "--work-dir",
        work.root,
        "--run-id",
        "canary-fails",
        "--dataset",
        "synthetic",
        "--models",
        "cnn",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--rollout",
        "canary",
        "--promote",
        "force",
        "--min-accuracy",
        "1.0",
        "--train-args=--steps-per-epoch 2",
        timeout=900,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "step smoke failed" in proc.stderr and "rolling it back" in proc.stderr, proc.stderr[-3000:]
    assert list(versions(work.served())) == [1, 2, 3]
    three = json.loads((work.served() / "3" / "promotion.json").read_text())
    assert (three["rollback_of"], three["restored_from"]) == (2, 1)
    assert not work.canary_state.exists()
    for track in ("serving.config", "serving-canary.config"):
        assert "specific" not in (work.root / "models" / track).read_text()
