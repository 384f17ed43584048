"""The client and server command lines, as the pipeline and a user run them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from jobs.local.processes import server_argv

from .conftest import ROOT, encode, env, local_only, one_line_error, run_predict


@local_only
def test_wait_for_the_latest_version(server_url, serving_work):
    proc = run_predict("--url", server_url, "--work-dir", serving_work, "--wait-version", "latest", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert "version=1" in proc.stdout.splitlines()


def check(server_url, serving_work, min_accuracy: str, samples: str):
    """jobs.predict --check on the synthetic test split through the server."""
    where = ("--url", server_url, "--work-dir", serving_work, "--dataset", "synthetic")
    return run_predict(*where, "--check", "--min-accuracy", min_accuracy, "--samples", samples)


@local_only
def test_check_scores_the_test_split(server_url, serving_work):
    proc = check(server_url, serving_work, "0.5", "300")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "samples=300" in lines
    (accuracy,) = [float(line.split("=")[1]) for line in lines if line.startswith("accuracy=")]
    assert 0.5 <= accuracy <= 1.0


@local_only
def test_check_fails_below_the_threshold(server_url, serving_work):
    proc = check(server_url, serving_work, "1", "200")
    if "accuracy=1\n" in proc.stdout:  # a perfect score cannot fail the highest threshold
        return
    assert "below --min-accuracy" in one_line_error(proc)
    assert any(line.startswith("accuracy=") for line in proc.stdout.splitlines())


@local_only
def test_samples_are_shown_with_class_names(server_url, serving_work):
    proc = run_predict("--url", server_url, "--work-dir", serving_work, "--dataset", "synthetic", "--samples", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("sample ") for line in lines)


def test_image_files(server_url, tmp_path):
    rng = np.random.default_rng(0)
    png, jpeg = tmp_path / "shirt.png", tmp_path / "boot.jpg"
    png.write_bytes(encode(rng.integers(0, 256, (28, 28), dtype=np.uint8), "PNG"))
    jpeg.write_bytes(encode(rng.integers(0, 256, (299, 299, 3), dtype=np.uint8), "JPEG"))
    proc = run_predict("--url", server_url, png, jpeg)
    assert proc.returncode == 0, proc.stderr
    from jobs.ingest.data import CLASS_NAMES

    lines = proc.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(png), str(jpeg)]
    assert all(line.split("\t")[1] in CLASS_NAMES for line in lines)


def test_a_file_that_is_no_image(server_url, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert str(bad) in one_line_error(run_predict("--url", server_url, bad))


def test_client_mistakes_are_one_line(server_url, tmp_path):
    assert "cannot read" in one_line_error(run_predict("--url", server_url, tmp_path / "missing.png"))
    # With no dataset given, the served model's is used; here nothing is served or ingested.
    empty = ("--url", server_url, "--work-dir", tmp_path)
    assert "no test images to sample" in one_line_error(run_predict(*empty, "--check"))
    assert "no test images to sample" in one_line_error(run_predict(*empty))
    assert "no dataset" in one_line_error(
        run_predict("--url", server_url, "--work-dir", tmp_path, "--dataset", "nope", "--samples", "2")
    )
    usage = run_predict("--url", server_url, "--wait-version", "soon")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_unreachable_server_is_one_line(tmp_path):
    from jobs.local.processes import free_ports

    proc = run_predict(
        "--url", f"http://127.0.0.1:{free_ports(1)[0]}", "--work-dir", tmp_path, "--wait-version", "1", "--timeout", "1"
    )
    assert "timed out" in one_line_error(proc)
    image = tmp_path / "a.png"
    image.write_bytes(encode(np.zeros((28, 28), np.uint8)))
    assert "(connection refused): start `make serve`" in one_line_error(
        run_predict("--url", f"http://127.0.0.1:{free_ports(1)[0]}", image)
    )


def run_serve(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_a_missing_model_base_path(tmp_path):
    argv = [sys.executable, "-m", "jobs.serve", "--model-base-path", str(tmp_path / "none"), "--port", "0"]
    assert "is not a folder" in one_line_error(run_serve(argv, timeout=120))


@local_only
def test_serve_says_when_the_port_is_taken(server_url, serving_work):
    port = server_url.rsplit(":", 1)[1]
    proc = run_serve(server_argv(sys.executable, serving_work / "models" / "fmnist", port), timeout=300)
    assert "cannot listen" in one_line_error(proc)


class FakeServer:
    """A loopback TCP server that answers every connection with the same canned bytes."""

    def __init__(self, answer: bytes):
        import socket
        import threading

        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def http_answer(status: str, body: bytes, *headers: str, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    "answer,needle",
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "did not answer with HTTP"),
        (http_answer("200 OK", b'{"predictions": [', length=1000), "cut short"),
        (http_answer("200 OK", b"[1, 2, 3]"), "not an object"),
        (http_answer("200 OK", b'{"predictions": [1]}'), "not objects"),
        (http_answer("302 Found", b"", "Location: http://127.0.0.1:9/elsewhere"), "redirected (302)"),
        (http_answer("500 Internal Server Error", b"<html>oops</html>"), "answered 500: <html>oops</html>"),
    ],
    ids=["not-http", "truncated", "json-list", "prediction-not-object", "redirect", "html-error"],
)
def test_a_strange_answer_is_one_line_naming_the_url(tmp_path, answer, needle):
    image = tmp_path / "a.png"
    image.write_bytes(encode(np.zeros((28, 28), np.uint8)))
    server = FakeServer(answer)
    try:
        line = one_line_error(run_predict("--url", server.url, image))
        assert needle in line, line
        if needle not in ("not objects",):
            assert f"{server.url}/v1/models/fmnist:predict" in line, line
        waited = one_line_error(run_predict("--url", server.url, "--wait-version", "1", "--timeout", "1"))
        assert server.url in waited, waited
    finally:
        server.close()
