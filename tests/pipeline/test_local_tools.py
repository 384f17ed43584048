"""The local overview (`make status` without a cluster), TensorBoard (`make tensorboard`), and a
step run by hand after `make local`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.core.files import write_json
from jobs.core.paths import Work
from jobs.local.processes import free_ports
from tests.helpers import ROOT
from tests.helpers.jobs import job_env, run_job


@pytest.fixture
def finished_run(tmp_path) -> Work:
    """A work dir with the files one finished local run leaves (the models themselves do not
    matter to the overview)."""
    work = Work(tmp_path / "work")
    run = work.run("local-1")
    write_json(work.dataset("synthetic") / "manifest.json", {"counts": {"train": 2000, "test": 500}})
    for model, accuracy in (("cnn", 0.91), ("dropout", 0.87)):
        write_json(work.candidate("local-1", model).eval / "metrics.json", {"accuracy": accuracy})
        write_json(work.candidate("local-1", model).run_info, {"params": {"dataset": "synthetic", "workers": 2}})
    write_json(run / "timings.json", {"stages": {"train:cnn": 61.0, "train:dropout": 75.0}, "wall_seconds": 190.0})
    write_json(run / "promotion.json", {"promoted": True, "model": "cnn", "version": 1, "reason": "nothing is served"})
    write_json(work.served() / "1" / "promotion.json", {"model": "cnn", "run_id": "local-1", "dataset": "synthetic"})
    work.mlflow.mkdir(parents=True)
    (work.mlflow / "mlflow.db").write_bytes(b"")
    return work


def status(*env: tuple[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["hack/status.sh"], cwd=ROOT, env=job_env(**dict(env)), capture_output=True, text=True, timeout=60
    )


def test_local_status_is_one_screen_of_runs_candidates_served_version_and_store(finished_run):
    proc = status(("STATUS", "local"), ("WORK_DIR", str(finished_run.root)), ("PORT", str(free_ports(1)[0])))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "served: version 1" in out and "cnn from run local-1" in out and "trained on synthetic" in out
    assert "server: nothing answers" in out and "make serve" in out
    assert "datasets: synthetic (2000 train, 500 test)" in out
    assert f"tracking: sqlite:///{(finished_run.mlflow / 'mlflow.db').resolve()}" in out
    assert "local-1" in out and "promoted cnn as version 1" in out and "3 min 10 s" in out
    assert "test accuracy 0.9100" in out and "train 1 min 15 s" in out


def test_status_without_a_cluster_shows_local_mode_and_says_so(finished_run, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"  # no cluster in it: kubectl fails at once
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    proc = status(("WORK_DIR", str(finished_run.root)), ("KUBECONFIG", str(kubeconfig)))
    assert proc.returncode == 0, proc.stderr
    assert "served: version 1" in proc.stdout
    assert "none answers on kubectl's current context" in proc.stdout


@pytest.mark.slow
def test_make_tensorboard_serves_the_runs_logs(tmp_path):
    import tensorflow as tf

    logs = Work(tmp_path / "work").candidate("local-1", "cnn").tensorboard / "train"
    with tf.summary.create_file_writer(str(logs)).as_default():
        tf.summary.scalar("epoch_loss", 0.5, step=0)
    port = free_ports(1)[0]
    proc = start_make("tensorboard", env={"WORK_DIR": str(tmp_path / "work"), "TENSORBOARD_PORT": str(port)})
    try:
        runs = answer_of(proc, f"http://127.0.0.1:{port}/data/runs", lambda body: "local-1" in body, 120) or ""
        assert "local-1/cnn/tensorboard/train" in runs, proc.stdout.read() if proc.poll() is not None else runs
    finally:
        output = ctrl_c(proc)
    assert_quiet(output, tmp_path / "work" / "logs" / "tensorboard.log")


def start_make(target: str, *variables: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`make <target> [VAR=value...]` in a session of its own, as from a terminal (for ctrl_c),
    its output captured."""
    return subprocess.Popen(
        ["make", "-s", "--no-print-directory", target, *variables],
        cwd=ROOT,
        env=job_env(VENV=str(ROOT / ".venv"), **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def answer_of(proc: subprocess.Popen, url: str, ready, seconds: float) -> str | None:
    """GETs `url` until its body is `ready`, the command exits or `seconds` pass; the last body
    read (None: no answer at all)."""
    deadline = time.monotonic() + seconds
    body = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
            if ready(body):
                break
        except OSError:
            pass
        time.sleep(0.5)
    return body


def ctrl_c(proc: subprocess.Popen) -> str:
    """Ctrl-C to a command started in its own session (the terminal's foreground group); its output."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def assert_quiet(output: str, log) -> None:
    """What a person reads of a server started and stopped with Ctrl-C: no CUDA probe on this
    CPU-only machine, no traceback, no error line from make; the log keeps everything."""
    for needle in ("cuInit", "CUDA", "Traceback", "make: ***", "error"):
        assert needle not in output, f"{needle!r} shown:\n{output}"
    assert log.exists(), f"no log at {log}"


@pytest.mark.slow
def test_a_step_run_by_hand_tracks_into_the_work_dirs_store(playground, tmp_path):
    """`python -m jobs.promote ... --force` after `make local`, with no MLFLOW_TRACKING_URI:
    the new version is registered in the work dir's store, as inside a run."""
    from mlflow.tracking import MlflowClient

    work = Work(tmp_path / "work")
    shutil.copytree(playground.work, work.root, symlinks=True)
    (run,) = (p.name for p in work.root.joinpath("runs").iterdir())
    proc = run_job("promote", "--work-dir", work.root, "--run-id", run, "--dataset", "synthetic", "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"tracking into {work.mlflow_uri}" in proc.stderr
    champion = MlflowClient(work.mlflow_uri).get_model_version_by_alias("fmnist", "champion")
    assert champion.tags["serving_version"] == "2"


def make_predict(work: Work, port: int, **knobs: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "predict", f"WORK_DIR={work.root}", f"PORT={port}"]
        + [f"{k}={v}" for k, v in knobs.items()],
        cwd=ROOT,
        env=job_env(VENV=str(ROOT / ".venv")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


def test_make_predict_with_no_server_says_start_make_serve_at_once(finished_run):
    """Connection refused is no server, not a server still loading: make predict fails in
    seconds (not after PREDICT_WAIT) and names the command that starts one."""
    port = free_ports(1)[0]  # nothing listens there
    proc, took = make_predict(finished_run, port, IMAGES="samples/sneaker.png", PREDICT_WAIT="60")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: nothing listens at http://127.0.0.1:{port} (connection refused): start `make serve` "
        "(in another terminal), or point PORT at a running server"
    ], proc.stderr
    assert took < 30, f"make predict took {took:.1f} s to give up on a refused connection"
    quoted = " ".join((ROOT / "docs/troubleshooting.md").read_text().split())
    message = errors[0].removeprefix("error: ").replace(str(port), "8501")
    assert message in quoted, "docs/troubleshooting.md does not quote the message"


def test_make_predict_waits_for_a_server_that_answers_but_has_not_loaded(finished_run):
    """A server that answers without the version yet (TF Serving loading it) is waited for,
    up to PREDICT_WAIT: past the refused connection's few seconds."""
    import http.server
    import threading

    class Loading(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"model_version_status": [{"version": "1", "state": "LOADING", "status": {}}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Loading)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc, took = make_predict(
            finished_run, server.server_address[1], IMAGES="samples/sneaker.png", PREDICT_WAIT="8"
        )
    finally:
        server.shutdown()
    assert proc.returncode != 0
    assert "timed out after 8s waiting for fmnist version 1" in proc.stderr and "1 LOADING" in proc.stderr, proc.stderr
    assert took >= 8, took


@pytest.mark.slow
def test_make_serve_shows_its_own_lines_and_stops_quietly(tmp_path, trained_model):
    """make serve on a CPU-only machine: its lines and uvicorn's, not TensorFlow's start-up
    notes (those are in the log); Ctrl-C ends it with its own last lines and no error."""
    work = Work(tmp_path / "work")
    shutil.copytree(trained_model, work.served() / "1")
    port = free_ports(1)[0]
    proc = start_make("serve", f"WORK_DIR={work.root}", f"PORT={port}")
    try:
        state = answer_of(proc, f"http://127.0.0.1:{port}/v1/models/fmnist", lambda body: "AVAILABLE" in body, 180)
        assert "AVAILABLE" in (state or ""), state
    finally:
        output = ctrl_c(proc)
    assert "serving fmnist version 1" in output and "stopped (Ctrl-C)" in output, output
    log = work.root / "logs" / f"serve-{port}.log"
    assert_quiet(output, log)
    assert "serving fmnist version 1" in log.read_text()
    # The probe's error is there, kept from the terminal (a machine with a GPU has none to keep).
    assert "cuInit" in log.read_text() or Path("/dev/nvidiactl").exists(), log.read_text()


@pytest.mark.slow
def test_make_ui_stops_quietly_on_ctrl_c(tmp_path, mlflow_uri):
    """make ui: its own lines only (MLflow's go to the log), and Ctrl-C stops it with one line,
    not uvicorn's traceback of its cancelled lifespan task."""
    work = tmp_path / "work"
    (work / "mlflow").mkdir(parents=True)
    shutil.copy(mlflow_uri.removeprefix("sqlite:///"), work / "mlflow" / "mlflow.db")
    port = free_ports(1)[0]
    proc = start_make("ui", f"WORK_DIR={work}", f"MLFLOW_PORT={port}")
    try:
        answered = answer_of(proc, f"http://127.0.0.1:{port}/health", lambda body: True, 180) is not None
        assert answered, proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        output = ctrl_c(proc)
    assert_quiet(output, work / "logs" / "mlflow-ui.log")
    assert output.splitlines()[-1] == ">> MLflow UI stopped", output
    assert all(line.startswith(">> ") for line in output.splitlines()), output
    assert nothing_listens(port), "the UI still listens"


def nothing_listens(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_make_predict_waits_while_make_serve_starts(finished_run):
    """A `make serve` on PORT lists itself before it imports TensorFlow and listens (15 s and
    more on a busy machine): make predict run meanwhile waits for it instead of failing."""
    port = free_ports(1)[0]
    write_json(finished_run.scrape_targets / f"serve-{port}.json", [{"targets": [f"127.0.0.1:{port}"]}])
    proc, took = make_predict(finished_run, port, IMAGES="samples/sneaker.png", PREDICT_WAIT="6")
    assert proc.returncode != 0
    assert f"timed out after 6s waiting for fmnist version 1 at http://127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert took >= 6, took


def test_make_serve_reads_the_stable_tracks_config_file_of_its_own_folder(tmp_path):
    """make serve serves what the stable track's config file pins when the file names this work
    dir's model folder; a work dir from before the file, or moved since, serves its folder."""
    from jobs.core import serving_config

    venv = tmp_path / "venv"
    record = tmp_path / "argv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"
    stub.write_text(
        f'#!/usr/bin/env bash\n[[ "$2" == jobs.serve ]] && printf "%s\\n" "$@" > "{record}"; cat > /dev/null\n'
    )
    stub.chmod(0o755)

    def served_with(work: Work) -> list[str]:
        env = job_env(VENV=str(venv), WORK_DIR=str(work.root), PORT=str(free_ports(1)[0]))
        proc = subprocess.run(["hack/serve.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return record.read_text().split()[2:]

    work = Work(tmp_path / "work")
    work.served().joinpath("1").mkdir(parents=True)
    assert served_with(work)[:2] == ["--model-base-path", f"{work.served()}"]  # no config file yet
    serving_config.pin(work, "stable", 1)
    assert served_with(work)[:2] == ["--model-config-file", f"{work.serving_config()}"]
    moved = Work(tmp_path / "moved")
    shutil.copytree(work.root, moved.root)
    assert served_with(moved)[:2] == ["--model-base-path", f"{moved.served()}"]
