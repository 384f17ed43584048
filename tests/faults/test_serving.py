"""A broken new version next to a good one: the model server keeps serving the good one and
reports the broken one in its status (TF Serving's model_version_status) and its log."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.helpers.faults import wait_for
from tests.serving.conftest import LocalServer, promote, reference_jpeg, reference_request


def broken_version(source, base, version: int, damage) -> None:
    """A version that appears whole-at-once (renamed in) but is damaged inside."""
    tmp = base / f".{version}.broken"
    shutil.copytree(source, tmp)
    damage(tmp)
    os.rename(tmp, base / str(version))


def no_variables(path) -> None:
    shutil.rmtree(path / "variables")


def garbage_graph(path) -> None:
    (path / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel protobuf \xff\xfe")


def statuses(client: httpx.Client) -> dict[str, dict]:
    response = client.get("/v1/models/fmnist")
    assert response.status_code == 200, response.text
    return {entry["version"]: entry for entry in response.json()["model_version_status"]}


def assert_serves(client: httpx.Client, version: int) -> None:
    """Latest and the explicit good version both answer, with valid predictions."""
    request = reference_request(reference_jpeg())
    for path in ("/v1/models/fmnist:predict", f"/v1/models/fmnist/versions/{version}:predict"):
        response = client.post(path, json=request)
        assert response.status_code == 200, f"{path}: {response.text}"
        assert len(response.json()["predictions"][0]["probabilities"]) == 10


@pytest.mark.slow
def test_broken_new_versions_leave_the_good_one_serving(tmp_path, trained_model):
    base = tmp_path / "models" / "fmnist"
    promote(trained_model, base, 1)
    server = LocalServer(base, tmp_path / "serve.log").start(expect_version=1)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for version, damage in ((2, no_variables), (3, garbage_graph)):
                broken_version(trained_model, base, version, damage)
                state = wait_for(
                    lambda version=version: (
                        statuses(client).get(str(version), {}).get("state") == "END" and statuses(client)
                    ),
                    120,
                    f"version {version} to fail to load",
                )
                failed = state[str(version)]["status"]
                assert failed["error_code"] != "OK" and failed["error_message"], state
                assert state["1"]["state"] == "AVAILABLE", state
                assert_serves(client, 1)
                missing = client.post(
                    f"/v1/models/fmnist/versions/{version}:predict", json=reference_request(reference_jpeg())
                )
                assert missing.status_code == 404, missing.text
                log = server.log()
                assert f"version {version} failed to load" in log and "still serving version 1" in log, log[-3000:]

            # A good version after the broken ones is picked up: the server did not get stuck.
            promote(trained_model, base, 4)
            wait_for(lambda: statuses(client).get("4", {}).get("state") == "AVAILABLE", 120, "version 4")
            assert_serves(client, 4)
    finally:
        server.stop()
