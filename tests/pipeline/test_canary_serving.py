"""The canary step against two real local servers on loopback, each pinned by its own model
config file as TF Serving is in the cluster, with a real MLflow store: a canary that answers
errors is rolled back (jobs.rollback: the stable model served again as the next version),
then a sound one is promoted. Its figures are the servers' own
Prometheus metrics, scraped before and after a window of probe traffic."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from jobs.core import serving_config
from jobs.core.paths import Work
from tests.helpers.jobs import assert_one_line_error, run_job
from tests.serving.conftest import LocalServer, wait_until

pytestmark = pytest.mark.slow


def broken_model(path: Path) -> Path:
    """A SavedModel that loads and passes the server's warm-up (an all-black image) but fails
    every real image with INVALID_ARGUMENT: a canary that answers errors."""
    import tensorflow as tf

    class Broken(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            pixels = tf.map_fn(
                lambda b: tf.io.decode_png(b, channels=1),
                image_bytes,
                fn_output_signature=tf.TensorSpec(None, tf.uint8),
            )
            check = tf.debugging.assert_equal(tf.reduce_max(pixels), tf.constant(0, tf.uint8), message="broken")
            with tf.control_dependencies([check]):
                return {"class_id": tf.zeros(tf.shape(image_bytes), tf.int64)}

    module = Broken()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def served(url: str) -> set[str]:
    status = httpx.get(f"{url}/v1/models/fmnist", timeout=10).json()["model_version_status"]
    return {s["version"] for s in status if s["state"] == "AVAILABLE"}


def start_canary(work: Work, stable: int, canary: int, client, registered: dict[int, str]) -> None:
    """What promote --rollout canary leaves: the pins, the state file, the alias canary."""
    serving_config.pin(work, "stable", stable)
    serving_config.pin(work, "canary", canary)
    client.set_registered_model_alias("fmnist", "canary", registered[canary])
    state = {
        "model": "fmnist",
        "stable_version": stable,
        "canary_version": canary,
        "run_id": "r1",
        "registered_version": registered[canary],
        "stable_registered_version": registered[stable],
    }
    (work.root / "models" / "canary.json").write_text(json.dumps(state))


@contextlib.contextmanager
def serving_tracks(base: Path, work: Work, logs: Path):
    """The stable and canary servers, each on its track's config file, started together (both
    load TensorFlow at once) and waited for at versions 1 and 2; yields their URLs by track."""
    servers = {
        track: LocalServer(
            base, logs / f"{track}.log", "--model-config-file", str(serving_config.track_path(work, track))
        )
        for track in serving_config.TRACKS
    }
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(
                pool.map(
                    lambda pair: pair[0].start(expect_version=pair[1]), [(servers["stable"], 1), (servers["canary"], 2)]
                )
            )
        yield {track: server.url for track, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def test_a_failing_canary_is_rolled_back_and_a_sound_one_promoted(tmp_path, ingested, trained_model, mlflow_uri):
    from mlflow.tracking import MlflowClient

    work = Work(ingested)
    base = work.served()
    base.mkdir(parents=True)
    shutil.copytree(trained_model, base / "1")
    broken_model(base / "2")
    client = MlflowClient(mlflow_uri)
    client.create_registered_model("fmnist")
    registered = {v: client.create_model_version("fmnist", (base / str(v)).as_uri()).version for v in (1, 2)}
    for version, registered_version in registered.items():  # what promote records in each version
        record = {"run_id": f"r{version}", "model": "cnn", "dataset": "synthetic", "accuracy": 0.9}
        record["registered_version"] = registered_version
        (base / str(version) / "promotion.json").write_text(json.dumps(record))
    client.set_registered_model_alias("fmnist", "champion", registered[1])
    start_canary(work, 1, 2, client, registered)

    with serving_tracks(base, work, tmp_path) as urls:
        argv = [
            "--work-dir", work.root, "--run-id", "r1", "--dataset", "synthetic",
            "--stable-url", urls["stable"], "--canary-url", urls["canary"],
            "--seconds", "3", "--probe-rate", "15", "--min-requests", "20",
        ]  # fmt: skip

        # The broken canary: every probe fails there, so it is rolled back, loudly: version 1's
        # model is served again as version 3, by every server, and nothing is deleted.
        proc = run_job("canary", *argv, MLFLOW_TRACKING_URI=mlflow_uri)
        error = assert_one_line_error(
            proc, "canary version 2 rolled back to 1 (its model served again as version 3)", "canary error rate 100.00%"
        )
        record = json.loads((work.run("r1") / "canary.json").read_text())
        assert record["action"] == "rollback" and record["figures"]["canary"]["errors"] >= 20, error
        assert record["figures"]["stable"]["errors"] == 0 and record["figures"]["stable"]["requests"] >= 20
        assert record["served_version"] == 3
        restored = json.loads((base / "3" / "promotion.json").read_text())
        assert restored["restored_from"] == 1 and restored["rollback_of"] == 2 and "error rate" in restored["reason"]
        for track in serving_config.TRACKS:
            assert serving_config.pinned(serving_config.track_path(work, track)) == ()  # the newest: 3
        assert not (work.root / "models" / "canary.json").exists() and (base / "2").is_dir()
        wait_until(lambda: served(urls["canary"]) == {"3"}, what="the canary server on version 3 (version 1's model)")
        wait_until(lambda: served(urls["stable"]) == {"3"}, what="the stable server on version 3 (version 1's model)")
        assert client.get_model_version_by_alias("fmnist", "champion").version == registered[1]
        assert "canary" not in client.get_registered_model("fmnist").aliases
        tags = client.get_model_version("fmnist", registered[2]).tags
        assert tags["canary_decision"] == "rollback" and "error rate" in tags["canary_reason"]
        assert tags["rolled_back"] == "true" and "error rate" in tags["rolled_back_reason"]

        # A sound canary (the same model as stable) as version 4: promoted, then the newest
        # version everywhere, as after any promotion.
        shutil.copytree(trained_model, base / "4")
        registered[4] = client.create_model_version("fmnist", (base / "4").as_uri()).version
        registered[3] = registered[1]  # version 3 holds version 1's model
        start_canary(work, 3, 4, client, registered)
        wait_until(lambda: served(urls["canary"]) == {"4"}, what="the canary server on version 4")
        proc = run_job("canary", *argv, MLFLOW_TRACKING_URI=mlflow_uri)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "decision=promote" in proc.stdout
        for track in serving_config.TRACKS:
            assert serving_config.pinned(serving_config.track_path(work, track)) == ()
        wait_until(lambda: served(urls["stable"]) == {"4"}, what="the stable server on version 4")
        assert client.get_model_version_by_alias("fmnist", "champion").version == registered[4]
        assert client.get_model_version("fmnist", registered[4]).tags["canary_decision"] == "promote"
        parent = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id], "tags.role = 'pipeline'")
        assert parent[0].data.tags["canary_decision"] == "promote"

        # Nothing in progress any more: the step says so and succeeds.
        proc = run_job("canary", *argv, MLFLOW_TRACKING_URI=mlflow_uri)
        assert proc.returncode == 0 and "canary=none" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_make_serve_follows_the_stable_track_through_a_canary_run(playground, tmp_path):
    """`make serve` running while `make local ROLLOUT=canary` promotes a new version: it is one
    more stable replica, so it keeps the stable version until the canary step decides, then
    serves what every server serves. The step's probe lines name the tracks; the run's summary
    says what the canary decided."""
    import calendar
    import subprocess
    import threading
    import time

    from jobs.core.files import read_json
    from jobs.local.processes import free_ports

    assert playground.pipeline.returncode == 0, playground.pipeline.stderr[-3000:]
    root = tmp_path / "fmnist"
    shutil.copytree(playground.root, root, symlinks=True)
    serving_config.serve_latest(Work(root / ".work"))  # its config file names the copy's folder
    port = free_ports(1)[0]
    serve = subprocess.Popen(
        ["make", "-s", "--no-print-directory", "serve", f"PORT={port}"],
        cwd=root,
        env=playground.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[tuple[float, set[str]]] = []  # (wall clock, the versions make serve reports AVAILABLE)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError):
                seen.append((time.time(), served(f"http://127.0.0.1:{port}")))
            done.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        wait_until(lambda: seen and seen[-1][1] == {"1"}, timeout=180, what="make serve on version 1")
        run = subprocess.run(
            ["bash", "-c", "make local DATASET=synthetic ROLLOUT=canary PROMOTE=force MODELS=cnn CANARY_SECONDS=12"],
            cwd=root,
            env=playground.env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        (record_path,) = (root / ".work" / "runs").glob("*/canary.json")
        record = read_json(record_path)
        after = str(record["served_version"])
        wait_until(lambda: seen[-1][1] == {after}, timeout=60, what=f"make serve on version {after}")
    finally:
        done.set()
        os.killpg(serve.pid, signal.SIGINT)
        serve.communicate(timeout=30)
    decided = calendar.timegm(time.strptime(record["decided_at"], "%Y-%m-%dT%H:%M:%SZ"))
    # Until the decision, the stable version: never the canary's (a roll back publishes the stable
    # model again as a newer version just before it records the decision).
    canary = str(record["canary_version"])
    before = [(at, versions) for at, versions in seen if at < decided]
    assert before and all(canary not in versions for _, versions in before), f"make serve before the decision: {before}"
    output = run.stdout + run.stderr
    assert "probe of the stable track:" in output and "probe of the canary track:" in output, output[-3000:]
    assert "probe http" not in output
    summary = " ".join(run.stdout.split())
    assert f"canary: version 2 on the canary track against 1 on the stable one: {record['decision']}" in summary, (
        summary
    )
    assert f"every server now serves version {after}" in summary, summary
    if record["action"] == "promote":
        assert run.returncode == 0, output[-3000:]
    else:  # a roll back fails the run, with the reason on its last line, after the summary
        assert run.returncode != 0, output[-3000:]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert errors and "rolled back to 1" in errors[-1], run.stderr[-3000:]
