"""Load: many concurrent requests, none fails. Runs against SERVING_URL when it is set.
Latency and throughput are measured by the benchmark, not asserted here."""

from __future__ import annotations

import threading

import httpx
import pytest

from .conftest import MODEL, check_prediction, reference_jpeg, reference_request

REQUESTS = 2_000
CONCURRENCY = 16


@pytest.mark.slow
def test_2000_requests_at_concurrency_16_without_errors(server_url):
    bodies = [reference_request(reference_jpeg(seed)) for seed in range(8)]
    lock = threading.Lock()
    next_request = [0]
    failures: list[str] = []
    answered = [0]

    def take() -> int | None:
        with lock:
            if next_request[0] >= REQUESTS:
                return None
            next_request[0] += 1
            return next_request[0] - 1

    def worker() -> None:
        with httpx.Client(base_url=server_url, timeout=60) as client:
            while (i := take()) is not None:
                try:
                    response = client.post(f"/v1/models/{MODEL}:predict", json=bodies[i % len(bodies)])
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    (prediction,) = response.json()["predictions"]
                    check_prediction(prediction)
                except (httpx.HTTPError, AssertionError, ValueError) as err:
                    failures.append(repr(err)[:200])
                    continue
                with lock:
                    answered[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "requests still running after 10 minutes"
    assert not failures, f"{len(failures)} failed, e.g. {failures[:3]}"
    assert answered[0] == REQUESTS
