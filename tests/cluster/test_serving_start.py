"""TF Serving on an empty volume: the server must start, and `make deploy` succeed, before any
model exists; it becomes ready when a version is loaded.

TF Serving itself cannot run here (no image, no binary). Its start-up is modelled from its
source at 2.20.0 and driven with the rendered flags and with the files the rendered init
container really writes (its exact script, run by /bin/sh on a temp dir):

- model_servers/main.cc L131-149: with --model_config_file, --model_name and
  --model_base_path are ignored.
- model_servers/server.cc L212-218: the config file is parsed before anything starts; a file
  that cannot be read or parsed ends the server. L332: ServerCore::Create, then (L337-349) a
  thread re-reads the file every --model_config_file_poll_wait_seconds, and only after that
  the ports open.
- model_servers/server_core.cc L476-501: ReloadConfig of a config with no model list logs
  "Taking no action for empty config" and returns at once (a later config is accepted as the
  first one); L367-441 AddModelsViaModelConfigList: the first list waits until every model has
  a version loaded (on the poll thread once the server runs).
- util/proto_util.h L27-40: the file is read through Env::NewReadOnlyMemoryRegionFromFile, a
  memory map, which fails on a zero-byte file (measured below with TF 2.20's own Env).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.core import serving_config
from jobs.core.paths import Work
from tests.cluster import workflow

SH = shutil.which("sh") or "/bin/sh"


def deployment(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tf-serving")


def flags(container: dict) -> dict[str, str]:
    return dict(a.lstrip("-").split("=", 1) for a in container["args"])


def mount(container: dict, volume: str) -> dict:
    return next(m for m in container["volumeMounts"] if m["name"] == volume)


def modelled_start(args: dict[str, str], read_file, versions) -> str:
    """What tensorflow_model_server 2.20 does at start-up, after the source named above:
    'listening' (ports open), 'waiting for <model>' (ServerCore::Create blocks: no port) or
    'exits: <why>'. read_file(path) -> bytes or None; versions(base_path) -> version numbers."""
    if "model_config_file" in args:
        data = read_file(args["model_config_file"])
        if data is None:
            return "exits: cannot read the model config file"
        if len(data) == 0:
            return "exits: Invalid argument (the memory map of a zero-byte file)"
        models = parse_models(data.decode())
    elif "model_base_path" in args:
        models = {args.get("model_name", "default"): args["model_base_path"]}
    else:
        return "exits: both model_base_path and model_config_file are empty"
    for name, base in models.items():
        if not versions(base):
            return f"waiting for {name}"
    return "listening"


def parse_models(text: str) -> dict[str, str]:
    """name -> base_path of a ModelServerConfig text (the subset jobs.serving_config writes)."""
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    names = re.findall(r'\bname:\s*"([^"]*)"', body)
    bases = re.findall(r'\bbase_path:\s*"([^"]*)"', body)
    assert len(names) == len(bases), text
    return dict(zip(names, bases, strict=True))


def run_init(container: dict, work_mount: str, work: Path) -> subprocess.CompletedProcess:
    """The init container's command and args as rendered, the volume's mount path mapped to
    `work`."""
    argv = [
        work.as_posix() + a[len(work_mount) :] if a.startswith(work_mount + "/") else a
        for a in container["command"] + container["args"]
    ]
    assert argv[0] == "/bin/sh"
    return subprocess.run([SH, *argv[1:]], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def serving(overlay):
    d = deployment(overlay)
    spec = d["spec"]["template"]["spec"]
    [init] = [c for c in spec.get("initContainers", []) if c["name"] == "model-config"]
    [server] = [c for c in spec["containers"] if c["name"] == "tf-serving"]
    return spec, init, server


def test_the_server_reads_a_model_config_file_on_the_work_volume(serving, wf):
    _, init, server = serving
    args = flags(server)
    work_mount = mount(server, "work")["mountPath"]
    assert "model_base_path" not in args and "model_name" not in args, "ignored beside a config file (main.cc)"
    assert args["model_config_file"] == serving_config.path(Work(Path(work_mount))).as_posix()
    assert 0 < int(args["model_config_file_poll_wait_seconds"]) <= 10
    assert 0 < int(args["file_system_poll_wait_seconds"]) <= 10
    # The workflow's promote step writes the file where the server reads it: same volume, same
    # mount path (the base path inside the file is the writer's path).
    wf_mount = next(
        m["mountPath"] for m in workflow.templates(wf)["promote"]["container"]["volumeMounts"] if m["name"] == "work"
    )
    assert wf_mount == work_mount
    assert init["args"][-1] == args["model_config_file"]


def test_the_init_container_may_write_and_the_server_may_not(serving):
    spec, init, server = serving
    assert mount(server, "work").get("readOnly") is True
    assert not mount(init, "work").get("readOnly")
    work = next(v for v in spec["volumes"] if v["name"] == "work")
    assert not work["persistentVolumeClaim"].get("readOnly"), (
        "a read-only claim would make the init's mount read-only too"
    )
    assert init["image"] == server["image"], "the same pinned image: it has /bin/sh"


def test_on_an_empty_volume_the_old_flags_never_open_a_port_and_the_new_ones_do(tmp_path, serving):
    _, init, server = serving
    work_mount = mount(server, "work")["mountPath"]
    work = tmp_path / "work"
    work.mkdir()

    def read_file(path: str):
        local = work / Path(path).relative_to(work_mount)
        return local.read_bytes() if local.is_file() else None

    def versions(base: str):
        local = work / Path(base).relative_to(work_mount)
        return [p for p in local.iterdir() if p.name.isdigit()] if local.is_dir() else []

    # What this project shipped before: --model_base_path on an empty folder.
    old = {"model_name": "fmnist", "model_base_path": f"{work_mount}/models/fmnist"}
    assert modelled_start(old, read_file, versions) == "waiting for fmnist"
    # Without the init container the config file is missing: the server exits.
    assert modelled_start(flags(server), read_file, versions).startswith("exits")
    proc = run_init(init, work_mount, work)
    assert proc.returncode == 0, proc.stderr
    assert modelled_start(flags(server), read_file, versions) == "listening"
    # Probes: up = the REST port (open at once), ready = a loaded version.
    assert server["startupProbe"]["tcpSocket"]["port"] == "http"
    assert server["livenessProbe"]["tcpSocket"]["port"] == "http"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models/fmnist/metadata"
    # After a promotion the file names the model: the running server loads it on its next poll
    # (a restarted one waits for it before opening its ports, and it is there).
    (work / "models" / "fmnist" / "1").mkdir(parents=True)
    serving_config.serve_latest(Work(work))
    text = (work / "models" / "serving.config").read_text()
    assert parse_models(text) == {"fmnist": str(work / "models" / "fmnist")}


def test_the_init_script_writes_the_placeholder_once_and_never_over_a_config(tmp_path, serving):
    _, init, server = serving
    work_mount = mount(server, "work")["mountPath"]
    work = tmp_path / "work"
    proc = run_init(init, work_mount, work)  # the folder does not even exist yet
    assert proc.returncode == 0 and "created" in proc.stdout, proc.stdout + proc.stderr
    config = serving_config.path(Work(work))
    assert config.read_text() == serving_config.PLACEHOLDER, "one placeholder text (jobs/core/serving_config.py)"
    assert oct(config.stat().st_mode & 0o777) == "0o644"
    # A config the pipeline wrote is kept as it is.
    serving_config.serve_latest(Work(work))
    written = config.read_text()
    proc = run_init(init, work_mount, work)
    assert proc.returncode == 0 and "kept" in proc.stdout
    assert config.read_text() == written
    assert [p.name for p in config.parent.iterdir()] == ["serving.config"], "no temp file left"


def test_replicas_starting_together_create_one_whole_placeholder(tmp_path, serving):
    _, init, server = serving
    work_mount = mount(server, "work")["mountPath"]
    for attempt in range(5):
        work = tmp_path / f"work{attempt}"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            procs = list(pool.map(lambda _, w=work: run_init(init, work_mount, w), range(8)))
        assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
        assert sum("created" in p.stdout for p in procs) == 1
        assert serving_config.path(Work(work)).read_text() == serving_config.PLACEHOLDER
        assert sorted(p.name for p in (work / "models").iterdir()) == ["serving.config"]


def test_tensorflow_reads_the_placeholder_but_not_a_zero_byte_file(tmp_path):
    """The file reader TF Serving uses (Env::NewReadOnlyMemoryRegionFromFile), called through
    TF 2.20's ImmutableConst op, which maps a file with the same Env call."""
    placeholder = tmp_path / "placeholder.config"
    placeholder.write_text(serving_config.PLACEHOLDER)
    empty = tmp_path / "empty.config"
    empty.write_bytes(b"")
    code = (
        "import sys, tensorflow as tf\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        tf.raw_ops.ImmutableConst(dtype=tf.uint8, shape=[0], memory_region_name=path)\n"
        "        print(path, 'read')\n"
        "    except tf.errors.InvalidArgumentError:\n"
        "        print(path, 'invalid')\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(placeholder), str(empty)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.stdout.split("\n")[:2] == [f"{placeholder} read", f"{empty} invalid"], proc.stdout + proc.stderr


def test_the_config_text_parses_as_tf_servings_model_server_config():
    pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2",
        reason="tensorflow-serving-api (its ModelServerConfig protos) is not installed",
    )
    from google.protobuf import text_format

    empty = text_format.Parse(serving_config.PLACEHOLDER, pb2.ModelServerConfig())
    assert empty.WhichOneof("config") is None, "no model: 'Taking no action for empty config'"
    latest = text_format.Parse(
        serving_config.render([serving_config.Model("fmnist", "/work/models/fmnist")]), pb2.ModelServerConfig()
    )
    [model] = latest.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("fmnist", "/work/models/fmnist", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1
    pinned = text_format.Parse(
        serving_config.render([serving_config.Model("fmnist", "/work/models/fmnist", (3, 2))]), pb2.ModelServerConfig()
    )
    assert list(pinned.model_config_list.config[0].model_version_policy.specific.versions) == [2, 3]
