"""A server under abuse: bounded work per request, a bounded queue, requests dropped when
their client leaves, JSON that cannot stall it, connections that time out, a 413 the client
can read. Each test uses a server of its own module with the default limits, so the numbers
below are the documented defaults (jobs/serving/limits.py)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from jobs.serving.limits import Limits

from .abuse import (
    PREDICT,
    SIDE,
    bomb_png,
    closed_by_server,
    connect,
    head,
    heavy_body,
    metric,
    read_answer,
    rss,
)
from .conftest import REMOTE_REASON, SERVING_URL, LocalServer, promote, reference_jpeg, reference_request

pytestmark = pytest.mark.skipif(bool(SERVING_URL), reason=REMOTE_REASON)

LIMITS = Limits()
PER_REQUEST = max(1, LIMITS.max_request_pixels // (SIDE * SIDE))  # 4096² images a request may hold


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_model):
    root = tmp_path_factory.mktemp("abuse")
    base = root / "models" / "fmnist"
    promote(trained_model, base, 1)
    server = LocalServer(base, root / "serve.log").start()
    try:
        yield server
    finally:
        server.stop()


def post(url: str, body: bytes, timeout: float = 120) -> httpx.Response:
    return httpx.post(url + PREDICT, content=body, headers={"content-type": "application/json"}, timeout=timeout)


def one_image(url: str) -> float:
    """Seconds for one ordinary request (the reference 299x299 JPEG)."""
    started = time.perf_counter()
    response = httpx.post(url + PREDICT, json=reference_request(reference_jpeg()), timeout=120)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


# --- finding 2: CPU amplification --------------------------------------------------------


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(server):
    decoded_before = metric(server.url, "serving_batch_size_sum")
    response = post(server.url, heavy_body(PER_REQUEST + 1))
    assert response.status_code == 400, response.text[:300]
    assert f"{LIMITS.max_request_pixels} decoded pixels" in response.json()["error"]
    assert metric(server.url, "serving_batch_size_sum") == decoded_before  # nothing was decoded
    assert post(server.url, heavy_body(1)).status_code == 200  # within the budget it is served


def test_a_full_queue_answers_503_with_retry_after(server):
    answers: list[httpx.Response] = []
    body = heavy_body(PER_REQUEST)

    def send():
        answers.append(post(server.url, body))

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    statuses = sorted(a.status_code for a in answers)
    assert len(answers) == 12 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 12 - LIMITS.max_queued_pixels // LIMITS.max_request_pixels - 1, statuses
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"].isdigit() and "busy" in busy.json()["error"]
    one_image(server.url)


def test_the_work_of_a_client_that_has_gone_is_dropped(server):
    """Four clients send a request of heavy images each and leave. What was decoded while they
    were there (or is in flight when they leave) is spent; nothing more may be: a server that
    works in arrival order would go on to decode all of them."""
    one_image(server.url)
    body = heavy_body(PER_REQUEST)
    socks = [connect(server.url) for _ in range(4)]
    for sock in socks:
        sock.sendall(head("POST", PREDICT, len(body)) + body)
    time.sleep(0.3)
    for sock in socks:
        sock.close()  # the clients leave
    at_close = metric(server.url, "serving_batch_size_sum")
    one_image(server.url)  # answered; on a FIFO server only after all the heavy work
    time.sleep(2)
    # Less the one ordinary image; what was on a worker when the clients left may still finish
    # (one heavy image per call), and the event loop may notice the closed sockets a moment late.
    after = metric(server.url, "serving_batch_size_sum") - at_close - 1
    assert after <= PER_REQUEST - 1, f"{after:.0f} heavy images decoded after their clients had gone"
    assert metric(server.url, "serving_dropped_requests_total", {"reason": "gone"}) >= 1


@pytest.mark.slow
def test_a_normal_request_beside_an_abusive_client(server):
    """One-image latency while an abusive client sends, on six connections, requests of 16
    4096x4096 images (1,000 s of decoding in all on a server without a budget) and the
    costliest requests within the budget: a small multiple of the unloaded latency, measured
    in this test."""
    one_image(server.url)
    unloaded = statistics.median(one_image(server.url) for _ in range(30))
    stop = threading.Event()

    def abuse(images: int):
        body = heavy_body(images)
        with httpx.Client(timeout=600) as client:
            while not stop.is_set():
                client.post(server.url + PREDICT, content=body, headers={"content-type": "application/json"})

    abusers = [threading.Thread(target=abuse, args=(n,), daemon=True) for n in (16, 16, *[PER_REQUEST] * 4)]
    for thread in abusers:
        thread.start()
    try:
        time.sleep(1)
        loaded = [one_image(server.url) for _ in range(30)]
    finally:
        stop.set()
        for thread in abusers:
            thread.join(600)
    factor = statistics.median(loaded) / unloaded
    # Unloaded, a request takes a few ms; behind the queue of heavy work it took seconds.
    assert statistics.median(loaded) < max(20 * unloaded, 0.25), (factor, unloaded, sorted(loaded))


# --- finding 3: JSON work stalls the server ----------------------------------------------


def test_json_bombs_neither_stall_status_nor_keep_memory(server):
    bomb = b'{"instances": [' + b",".join([b"[]"] * 3_000_000) + b"]}"  # 9 MiB of empty lists
    one_image(server.url)
    before = rss(server.proc.pid)
    answers, status_times, peak = [], [], [before]
    done = threading.Event()

    def send():
        answers.append(post(server.url, bomb).status_code)

    def watch():
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/v1/models/fmnist").raise_for_status()
                status_times.append(time.perf_counter() - started)
                peak.append(rss(server.proc.pid))
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [threading.Thread(target=send) for _ in range(8)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(300)
    done.set()
    watcher.join(60)
    time.sleep(0.5)
    after = rss(server.proc.pid)
    assert answers == [400] * 8
    assert max(status_times) < 1.0, f"status took up to {max(status_times):.2f}s"
    mib = 1024 * 1024
    assert (max(peak) - before) / mib < 400, f"resident memory grew by {(max(peak) - before) / mib:.0f} MiB"
    assert (after - before) / mib < 100, f"{(after - before) / mib:.0f} MiB still held after the requests"


# --- finding 4: connections never time out ----------------------------------------------


def test_idle_and_half_sent_connections_are_closed(server):
    idle = [connect(server.url) for _ in range(50)]
    half_head = [connect(server.url) for _ in range(50)]
    for sock in half_head:
        sock.sendall(b"POST /v1/models/fmnist:predict HTTP/1.1\r\nHost: test\r\nContent-Le")
    within = LIMITS.header_timeout + 5
    started = time.monotonic()
    try:
        assert all(closed_by_server(s, within - (time.monotonic() - started)) for s in idle + half_head)
    finally:
        for sock in idle + half_head:
            sock.close()
    one_image(server.url)


def test_connections_past_the_cap_are_refused_with_503(server):
    held = []
    try:
        for _ in range(LIMITS.max_connections):
            held.append(connect(server.url))
        time.sleep(0.2)
        extra = connect(server.url)
        extra.sendall(head("GET", "/v1/models/fmnist"))
        status, headers, body = read_answer(extra)
        extra.close()
        assert status == 503 and headers["retry-after"].isdigit(), (status, body)
        assert b"connections" in body
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    one_image(server.url)


# --- finding 5: an oversized body resets the connection ----------------------------------


@pytest.mark.parametrize("size_mib", [11, 65, 200])
def test_an_oversized_body_gets_a_413_the_client_can_read(server, size_mib):
    body = b" " * (size_mib * 1024 * 1024)
    sock = connect(server.url)
    sent: list[BaseException | None] = []

    def send():
        try:
            sock.sendall(head("POST", PREDICT, len(body)) + body)
            sent.append(None)
        except OSError as err:
            sent.append(err)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        status, headers, answer = read_answer(sock)
    finally:
        sender.join(60)
        sock.close()
    assert status == 413 and b"limit" in answer, (status, answer)
    assert headers.get("connection") == "close"
    assert sent == [None], f"sending the body failed: {sent}"


def test_an_oversized_chunked_body_gets_a_413(server):
    def chunks():
        for _ in range(LIMITS.max_body_bytes // (1024 * 1024) + 4):
            yield b" " * (1024 * 1024)

    response = httpx.post(server.url + PREDICT, content=chunks(), timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["error"]


# --- the same, on a server with tight limits (deadline, slow bodies) ---------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory, trained_model):
    root = tmp_path_factory.mktemp("tight")
    base = root / "models" / "fmnist"
    promote(trained_model, base, 1)
    flags = ["--request-timeout", "0.25", "--body-timeout", "1", "--header-timeout", "1", "--keep-alive-timeout", "1"]
    server = LocalServer(base, root / "serve.log", *flags).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_request_past_its_deadline_is_a_504(tight):
    """Four of the heaviest requests (as many as the queue holds) are 16 decodes of 4096² images:
    whatever the machine, the last of them cannot be done within a quarter of a second."""
    answers: list[httpx.Response] = []
    body = heavy_body(PER_REQUEST)
    threads = [threading.Thread(target=lambda: answers.append(post(tight.url, body))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    statuses = [a.status_code for a in answers]
    assert 504 in statuses and set(statuses) <= {200, 504}, statuses
    late = next(a for a in answers if a.status_code == 504)
    assert "Deadline exceeded" in late.json()["error"]
    one_image(tight.url)


def test_a_body_that_stops_arriving_is_a_408(tight):
    sock = connect(tight.url)
    try:
        sock.sendall(head("POST", PREDICT, 1000) + b'{"instances": [')
        started = time.monotonic()
        status, headers, body = read_answer(sock)
        assert status == 408 and b"did not arrive" in body and headers["connection"] == "close"
        assert time.monotonic() - started < 10
        assert closed_by_server(sock, 15)
    finally:
        sock.close()


def test_a_slow_request_head_is_a_408(tight):
    sock = connect(tight.url)
    try:
        sock.sendall(b"GET /v1/models/fmnist HTTP/1.1\r\n")
        status, _, body = read_answer(sock)
        assert status == 408 and b"head" in body
        assert closed_by_server(sock, 15)
    finally:
        sock.close()


def test_bomb_png_is_what_it_claims():
    import io

    from PIL import Image

    data = bomb_png()
    assert len(data) < 16 * 1024
    assert Image.open(io.BytesIO(data)).size == (SIDE, SIDE)
