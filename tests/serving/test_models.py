"""Which models and versions are served, as TF Serving 2.20 decides it, without TensorFlow: the
model config file as model_servers/server_core.cc validates it, the version policies of
sources/storage_path/file_system_storage_path_source.cc, the availability preserving unload of
core/availability_preserving_policy.cc, and labels as ServerCore resolves them. A fake loader
stands in for servable.load; test_config_file_server runs the real thing once."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from jobs.serving.errors import ApiError
from jobs.serving.modelconfig import ConfigError, Policy, parse
from jobs.serving.models import Models

from .conftest import LocalServer, local_only, promote, wait_until


class Fake:
    """A loaded version: acquire/release/close as a Servable has them."""

    def __init__(self, path: Path, version: int):
        self.path, self.version, self.inflight, self.closed = path, version, 0, False

    def acquire(self):
        self.inflight += 1

    def release(self):
        self.inflight -= 1

    def close(self):
        self.closed = True


class Loader:
    def __init__(self):
        self.failing: set[int] = set()
        self.loaded: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path, version: int) -> Fake:
        if version in self.failing:
            raise RuntimeError(f"version {version} is broken")
        with self.lock:
            self.loaded.append(version)
        return Fake(path, version)


def entry(base: Path, name: str = "m", policy: str = "", labels: dict[str, int] | None = None) -> str:
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {policy} {label_text} }}'


def config(base: Path, name: str = "m", policy: str = "", labels: dict[str, int] | None = None) -> str:
    return listing(entry(base, name, policy, labels))


def listing(*entries: str) -> str:
    return "model_config_list { " + " ".join(entries) + " }\n"


def versions_on_disk(base: Path, *numbers: int) -> None:
    for number in numbers:
        (base / str(number)).mkdir(parents=True, exist_ok=True)


def states(models: Models, name: str = "m") -> dict[str, str]:
    return {e["version"]: e["state"] for e in models.status(name, None)["model_version_status"]}


@pytest.fixture
def served(tmp_path):
    base, file = tmp_path / "m", tmp_path / "models.config"
    loader = Loader()
    models = Models(loader, 0.1, file)
    return base, file, loader, models


def test_the_config_file_as_tf_serving_validates_it(tmp_path):
    """server_core.cc: ValidateModelConfigList, GetPlatform, CreateStoragePathRoutes."""
    assert parse("# nothing served yet\n") == ()
    (model,) = parse(config(tmp_path, policy="model_version_policy { all {} }", labels={"stable": 3}))
    assert model.policy == Policy("all") and model.label("stable") == 3 and model.label("canary") is None
    refused = [
        (listing(entry(tmp_path), entry(tmp_path)), "Illegal to list model m multiple times in config list"),
        (config(Path("relative")), "Expected model m to have an absolute path or URI; got base_path()=relative"),
        ('model_config_list { config { name: "m" base_path: "/x" } }', "Illegal setting neither"),
        ('model_config_list { config { name: "m" base_path: "/x" model_platform: "tflite" } }', "unsupported platform"),
        ("model_config_list { config { nonsense: 1 } }", "does not parse"),
    ]
    for text, message in refused:
        with pytest.raises(ConfigError) as err:
            parse(text)
        assert message in str(err.value)


def test_version_policies_choose_among_the_folders():
    """file_system_storage_path_source.cc: latest N (1 by default), all, specific."""
    found = [1, 2, 3, 10]
    assert Policy().aspired(found) == {10}
    assert Policy("latest", num_versions=2).aspired(found) == {3, 10}
    assert Policy("all").aspired(found) == set(found)
    assert Policy("specific", versions=(2, 7)).aspired(found) == {2}
    assert Policy().aspired([]) == set()


def test_no_file_then_a_file_that_lists_the_model(served):
    """Until the config file lists a model nothing is served; then its latest version is."""
    base, file, loader, models = served
    versions_on_disk(base, 1, 2)
    models.poll_once()
    with pytest.raises(ApiError) as err:
        models.status("m", None)
    assert err.value.status == 404 and err.value.message == "Could not find any versions of model m"
    file.write_text(config(base))
    models.poll_once()
    assert states(models) == {"2": "AVAILABLE"} and loader.loaded == [2]


def test_all_versions_and_labels(served):
    base, file, loader, models = served
    versions_on_disk(base, 1, 2, 3)
    file.write_text(config(base, policy="model_version_policy { all {} }", labels={"stable": 2}))
    models.poll_once()
    assert states(models) == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "AVAILABLE"}
    assert models.acquire("m", None, None).version == 3  # the latest available
    assert models.acquire("m", 1, None).version == 1
    assert models.acquire("m", None, "stable").version == 2
    with pytest.raises(ApiError) as err:
        models.acquire("m", None, "canary")
    assert (err.value.status, err.value.message) == (400, "Unrecognized servable version label: canary")
    with pytest.raises(ApiError) as err:
        models.acquire("other", None, "stable")  # the label is looked up first, as ServerCore does
    assert err.value.status == 400
    file.write_text(config(base, policy="model_version_policy { all {} }", labels={"stable": 3}))
    models.poll_once()
    assert models.acquire("m", None, "stable").version == 3


def test_a_pin_moves_and_the_old_version_goes_once_the_new_one_serves(served):
    """AvailabilityPreservingPolicy: the chosen version loads first, then the other unloads."""
    base, file, loader, models = served
    versions_on_disk(base, 1, 2)
    file.write_text(config(base, policy="model_version_policy { specific { versions: 1 } }"))
    models.poll_once()
    held = models.acquire("m", 1, None)
    file.write_text(config(base, policy="model_version_policy { specific { versions: 2 } }"))
    models.poll_once()
    assert states(models) == {"2": "AVAILABLE", "1": "UNLOADING"}  # a request still holds 1
    held.release()
    models.poll_once()
    assert states(models) == {"2": "AVAILABLE", "1": "END"} and held.closed


def test_a_version_that_fails_keeps_the_one_served(served):
    base, file, loader, models = served
    versions_on_disk(base, 1)
    file.write_text(config(base))
    models.poll_once()
    loader.failing.add(2)
    versions_on_disk(base, 2)
    models.poll_once()
    status = {e["version"]: e for e in models.status("m", None)["model_version_status"]}
    assert status["1"]["state"] == "AVAILABLE" and status["2"]["state"] == "END"
    assert "version 2 is broken" in status["2"]["status"]["error_message"]
    assert models.acquire("m", None, None).version == 1


def test_a_pin_to_a_missing_version_unloads_as_tf_serving_does(served):
    """With no version chosen at all, the availability preserving policy unloads what is served
    (file_system_storage_path_source.cc emits the empty list of versions)."""
    base, file, loader, models = served
    versions_on_disk(base, 1)
    file.write_text(config(base))
    models.poll_once()
    file.write_text(config(base, policy="model_version_policy { specific { versions: 9 } }"))
    models.poll_once()
    assert states(models) == {"1": "END"}
    with pytest.raises(ApiError) as err:
        models.acquire("m", None, None)
    assert err.value.status == 404


def test_a_model_taken_out_of_the_config_is_unloaded_and_a_bad_config_changes_nothing(served):
    base, file, loader, models = served
    versions_on_disk(base, 1)
    file.write_text(config(base))
    models.poll_once()
    file.write_text(listing(entry(base), entry(base)))  # refused: listed twice
    models.poll_once()
    assert states(models) == {"1": "AVAILABLE"}
    file.write_text("# no model any more\n")
    models.poll_once()
    assert states(models) == {"1": "END"} and models.names() == []


@local_only
def test_config_file_server(half_plus_two, tmp_path):
    """The real server: two models from one file, read again while it runs; a file that TF
    Serving would refuse at the start is a one-line error there."""
    base = tmp_path / "models"
    promote(half_plus_two["tf2"] / "00000123", base / "a", 1)
    promote(half_plus_two["tf2"] / "00000123", base / "b", 5)
    file = tmp_path / "models.config"
    file.write_text(config(base / "a", name="a"))
    server = LocalServer(base / "a", tmp_path / "serve.log", "--model-config-file", str(file), model="a")
    server.start(expect_version=1)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/v1/models/b").status_code == 404
            file.write_text(listing(entry(base / "a", name="a"), entry(base / "b", name="b")))

            def b_serves() -> bool:
                status = http.get("/v1/models/b").json().get("model_version_status", [])
                return any(e["state"] == "AVAILABLE" for e in status)

            wait_until(b_serves, 60, "model b to load")
            for name in ("a", "b"):
                answer = http.post(f"/v1/models/{name}:predict", json={"instances": [1.0]})
                assert answer.json() == {"predictions": [2.5]}, answer.text
    finally:
        server.stop()
