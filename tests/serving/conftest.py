"""Fixtures for the serving contract tests: a real server on loopback, or any base URL.

By default each test talks to `python -m jobs.serve` started here on 127.0.0.1 with a small
trained SavedModel. With SERVING_URL set (for example the cluster's port-forward,
http://127.0.0.1:8501), the contract tests run against that server instead, so the same
tests show that TF Serving and the local server agree; tests that must control the server's
model files (hot swap, limits, metrics names) are skipped then and say why.
SERVING_MODEL names the model (default fmnist).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from jobs.local.processes import free_ports, server_argv
from tests.helpers import ROOT

SERVING_URL = os.environ.get("SERVING_URL", "").rstrip("/")
MODEL = os.environ.get("SERVING_MODEL", "fmnist")
REMOTE_REASON = (
    f"SERVING_URL={SERVING_URL} is set: this test needs the local server "
    "(control of its model files, or its own limits and metric names)"
)

local_only = pytest.mark.skipif(bool(SERVING_URL), reason=REMOTE_REASON)


def env() -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "SERVING_URL")}
    variables["PYTHONPATH"] = str(ROOT)
    return variables


def promote(source: Path, base: Path, version: int) -> Path:
    """Copies a SavedModel in as `base/<version>` the way promotion does: into a hidden
    temp dir beside it, then one rename."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{version}.tmp"
    shutil.copytree(source, tmp)
    target = base / str(version)
    os.rename(tmp, target)
    return target


class LocalServer:
    """`python -m jobs.serve` in a child process on a free loopback port; ready once `model`
    reports the expected version (with a model config file in `extra`, `model` is one it names)."""

    def __init__(self, base: Path, log_path: Path, *extra: str, model: str = "fmnist"):
        self.base = base
        self.log_path = log_path
        self.extra = extra
        self.model = model
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, expect_version: int | None = 1, timeout: float = 180.0) -> LocalServer:
        for _ in range(3):  # a free port can be taken between choosing and binding it
            port = free_ports(1)[0]
            self.url = f"http://127.0.0.1:{port}"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [*server_argv(sys.executable, self.base, port), "--poll-seconds", "0.2", *self.extra],
                    cwd=ROOT,
                    env=env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(expect_version, timeout):
                return self
            if "address already in use" not in self.log().lower():
                break
        raise AssertionError(f"jobs.serve did not become ready; its log:\n{self.log()[-4000:]}")

    def _wait_ready(self, version: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                response = httpx.get(f"{self.url}/v1/models/{self.model}", timeout=5)
                if version is None and response.status_code in (200, 404):
                    return True
                if response.status_code == 200 and any(
                    entry["state"] == "AVAILABLE" and entry["version"] == str(version)
                    for entry in response.json()["model_version_status"]
                ):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def serving_work(tmp_path_factory, trained_model, small_data) -> Path:
    """A work dir with the synthetic dataset and the trained model as version 1."""
    from jobs.core.paths import Work
    from jobs.ingest import data

    work = tmp_path_factory.mktemp("serving") / "work"
    data.write(small_data, Work(work).dataset("synthetic"), {"name": "synthetic", "test": True})
    promote(trained_model, Work(work).served(), 1)
    return work


@pytest.fixture(scope="session")
def half_plus_two(tmp_path_factory) -> dict[str, Path]:
    """TF Serving's test model in its TF1 and TF2 forms (halfplustwo.py), each a base path with
    version 123 (and the TF1 one a version 124 too, as TF Serving's
    saved_model_half_plus_two_2_versions has)."""
    from .halfplustwo import build_tf1, build_tf2

    root = tmp_path_factory.mktemp("half_plus_two")
    tf1 = build_tf1(root / "tf1" / "00000123")
    shutil.copytree(tf1, root / "tf1" / "00000124")
    build_tf2(root / "tf2" / "00000123")
    return {"tf1": root / "tf1", "tf2": root / "tf2"}


@pytest.fixture(scope="session")
def server_url(request, tmp_path_factory):
    """The base URL of the server under test: SERVING_URL, or a local server of our own."""
    if SERVING_URL:
        yield SERVING_URL
        return
    from jobs.core.paths import Work

    serving_work = request.getfixturevalue("serving_work")
    server = LocalServer(Work(serving_work).served(), tmp_path_factory.mktemp("logs") / "serve.log").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def http(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client


@pytest.fixture
def own_server(tmp_path, trained_model):
    """A fresh local server with its own model base path (for hot-swap tests)."""
    if SERVING_URL:
        pytest.skip(REMOTE_REASON)
    base = tmp_path / "models" / "fmnist"
    promote(trained_model, base, 1)
    server = LocalServer(base, tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop()


# --- payloads ----------------------------------------------------------------------------


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def reference_jpeg(seed: int = 0) -> bytes:
    """What the reference system's clients send: a 299x299 colour JPEG."""
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (299, 299, 3), dtype=np.uint8), "JPEG")


def reference_request(*images: bytes) -> dict:
    return {"instances": [{"image_bytes": b64(image)} for image in images]}


def check_prediction(prediction: dict) -> None:
    from jobs.ingest.data import CLASS_NAMES

    assert set(prediction) == {"probabilities", "class_id", "class_name"}, prediction
    probabilities = prediction["probabilities"]
    assert len(probabilities) == 10
    assert all(isinstance(p, float | int) and 0.0 <= p <= 1.0 for p in probabilities)
    assert abs(sum(probabilities) - 1.0) < 1e-3
    assert prediction["class_id"] == int(np.argmax(probabilities))
    assert prediction["class_name"] == CLASS_NAMES[prediction["class_id"]]


def assert_serves(client: httpx.Client) -> None:
    """A valid request still succeeds."""
    response = client.post(f"/v1/models/{MODEL}:predict", json=reference_request(reference_jpeg()))
    assert response.status_code == 200, response.text
    check_prediction(response.json()["predictions"][0])


def served_versions(client: httpx.Client) -> dict[str, dict]:
    response = client.get(f"/v1/models/{MODEL}")
    assert response.status_code == 200, response.text
    return {entry["version"]: entry for entry in response.json()["model_version_status"]}


def wait_until(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def run_predict(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.predict", *map(str, args)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]
