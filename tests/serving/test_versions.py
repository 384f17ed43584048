"""Version handling of the local server: the highest numeric version is served, a newly
promoted one is picked up without a restart (also under load), and a version that fails to
load never replaces the served one. These control the model files, so they run locally only."""

from __future__ import annotations

import shutil
import threading

import httpx
import pytest

from .conftest import (
    MODEL,
    assert_serves,
    one_line_error,
    promote,
    reference_jpeg,
    reference_request,
    run_predict,
    served_versions,
    wait_until,
)


def states(client: httpx.Client) -> dict[str, str]:
    return {version: entry["state"] for version, entry in served_versions(client).items()}


def test_highest_numeric_version_is_served_without_restart(own_server, trained_model, tmp_path):
    server = own_server.start(expect_version=1)
    base = own_server.base
    # Hidden (half-promoted) and non-numeric folders are never versions, even when complete.
    for name in (".9.tmp", "10.old", "latest", "v11"):
        shutil.copytree(trained_model, base / name)
    promote(trained_model, base, 2)
    waited = run_predict("--url", server.url, "--work-dir", tmp_path, "--wait-version", "latest", "--timeout", "120")
    assert waited.returncode == 0, waited.stderr
    assert "version=2" in waited.stdout.splitlines()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert states(client)["2"] == "AVAILABLE"
        wait_until(lambda: states(client).get("1") == "END", what="version 1 to be released")
        assert set(states(client)) == {"1", "2"}
        ok = client.post(f"/v1/models/{MODEL}/versions/2:predict", json=reference_request(reference_jpeg()))
        assert ok.status_code == 200, ok.text
        old = client.post(f"/v1/models/{MODEL}/versions/1:predict", json=reference_request(reference_jpeg()))
        assert old.status_code == 404
        assert_serves(client)
    assert server.proc.poll() is None


def test_broken_version_keeps_the_served_one_and_reports_why(own_server, trained_model, tmp_path):
    server = own_server.start(expect_version=1)
    base = own_server.base
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    promote(broken, base, 2)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        wait_until(lambda: served_versions(client).get("2", {}).get("state") == "END", what="version 2 to fail")
        entries = served_versions(client)
        assert entries["2"]["status"]["error_code"] != "OK"
        assert entries["2"]["status"]["error_message"]
        assert entries["1"]["state"] == "AVAILABLE"
        assert_serves(client)
        # the client stops waiting at once and says why
        waited = run_predict("--url", server.url, "--work-dir", tmp_path, "--wait-version", "2", "--timeout", "60")
        assert "failed to load" in one_line_error(waited)
        assert "failed to load" in own_server.log()
        # a good version after it is served
        promote(trained_model, base, 3)
        wait_until(lambda: served_versions(client).get("3", {}).get("state") == "AVAILABLE", what="version 3")
        assert_serves(client)


def test_wait_version_times_out_with_one_line(server_url, tmp_path):
    waited = run_predict("--url", server_url, "--work-dir", tmp_path, "--wait-version", "987654", "--timeout", "1.5")
    assert "timed out" in one_line_error(waited)


def test_wait_latest_needs_versions_on_disk(server_url, tmp_path):
    waited = run_predict("--url", server_url, "--work-dir", tmp_path, "--wait-version", "latest", "--timeout", "5")
    assert "no version folders" in one_line_error(waited)


@pytest.mark.slow
def test_promotion_while_requests_flow(own_server, trained_model):
    """Requests keep flowing while version 2 is promoted, loaded and swapped in: none fails,
    and version 2 is served afterwards."""
    server = own_server.start(expect_version=1)
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * 8
    body = reference_request(reference_jpeg(4))

    def send(slot: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set() and counts[slot] < 5_000:  # bounded even if the test hangs
                try:
                    response = client.post(f"/v1/models/{MODEL}:predict", json=body)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                counts[slot] += 1

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(counts))]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_until(lambda: sum(counts) >= 200, what="requests to flow")
            before = sum(counts)
            promote(trained_model, own_server.base, 2)
            wait_until(lambda: states(client).get("2") == "AVAILABLE", what="version 2")
            swapped = sum(counts)
            wait_until(lambda: sum(counts) >= swapped + 200, what="requests after the swap")
            wait_until(lambda: states(client).get("1") == "END", what="version 1 to be released")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:5]
    assert swapped > before, "no request was in flight during the swap"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post(f"/v1/models/{MODEL}/versions/2:predict", json=body)
        assert response.status_code == 200, response.text


def test_a_version_copied_in_two_steps_is_served_once_whole(own_server, trained_model):
    """Copied by hand: first the graph (and an empty variables folder), later the variables.
    The first load fails; once the files are all there the version is served, no restart."""
    server = own_server.start(expect_version=1)
    target = own_server.base / "2"
    (target / "variables").mkdir(parents=True)
    for item in trained_model.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        wait_until(lambda: served_versions(client).get("2", {}).get("state") == "END", what="version 2 to fail")
        failed = served_versions(client)["2"]["status"]
        assert failed["error_code"] != "OK"
        assert str(own_server.base) not in failed["error_message"], failed  # no server paths in answers
        for item in (trained_model / "variables").iterdir():
            shutil.copy2(item, target / "variables" / item.name)  # the folder "2" itself does not change
        wait_until(lambda: states(client).get("2") == "AVAILABLE", what="version 2 once whole")
        assert_serves(client)
    assert "failed to load" in own_server.log() and "Traceback" not in own_server.log()
