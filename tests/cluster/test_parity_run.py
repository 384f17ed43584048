"""Executing parity: run the workflow's own step commands, as written in workflows/e2e.yaml
(the containers' commands and args, and each TFJob replica's), on this machine in DAG order.

The shared volume is a temp dir, `python` is this interpreter, every `{{...}}` gets the value a
run would give it, each TFJob runs its `replicas` workers as processes with TF_CONFIG built the
way the training operator builds it (loopback ports instead of the pods' service names), and
the serving steps talk to `python -m jobs.serve` on a free port in place of TF Serving. If the
workflow and the jobs drift apart (a flag renamed, a module moved), this test fails.
Tiny settings: the synthetic dataset, 1 epoch, 2 workers per candidate.

Each step's peak resident memory (its process tree, sampled) is checked against the memory
limit its pod would have: the workers against the limits in the overlay's ConfigMap
fmnist-pipeline, the steps against their containers' limits."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from jobs.local.processes import free_ports, server_argv
from tests.cluster import workflow
from tests.helpers import ROOT

MODELS = os.environ.get("PARITY_MODELS", "cnn,dropout,batchnorm")
STEP_TIMEOUT = 900
SAMPLE_SECONDS = 0.25
MIB = 1024 * 1024


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (Ki, Mi, Gi, or plain bytes) in bytes."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}
    for suffix, factor in units.items():
        if str(text).endswith(suffix):
            return int(float(str(text)[: -len(suffix)]) * factor)
    return int(text)


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and its descendants (an upper bound of what its cgroup
    would be charged: shared pages count once per process)."""
    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
    return total


pytestmark = pytest.mark.slow


def fan_out(task: dict, values: dict[str, str]) -> list[str]:
    """The items of a task's withParam (the one expression form the workflow uses)."""
    m = re.fullmatch(r"\{\{=toJson\(sprig\.splitList\(',', workflow\.parameters\.(\w+)\)\)\}\}", task["withParam"])
    assert m, f"unsupported withParam {task['withParam']!r}"
    return values[f"workflow.parameters.{m[1]}"].split(",")


class Runner:
    def __init__(self, wf: dict, work: Path, values: dict[str, str], logs: Path):
        self.wf, self.work, self.values, self.logs = wf, work, values, logs
        mounts = {
            m["name"]: m["mountPath"]
            for t in wf["spec"]["templates"]
            if "container" in t
            for m in t["container"]["volumeMounts"]
        }
        self.mount = mounts[workflow.WORK_VOLUME]
        self.peaks: dict[str, int] = {}  # process name -> peak resident bytes of its tree
        self.limits: dict[str, int] = {}  # process name -> its container's memory limit

    def argv(self, container: dict, values: dict[str, str]) -> list[str]:
        argv = [workflow.substitute(a, values) for a in container["command"] + container.get("args", [])]
        assert argv[0] == "python", argv
        # The volume's mount path becomes the temp dir.
        argv = [
            str(self.work) + a[len(self.mount) :] if a == self.mount or a.startswith(self.mount + "/") else a
            for a in argv
        ]
        return [sys.executable, *argv[1:]]

    def env(self, container: dict, values: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MLFLOW_TRACKING_URI")}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = workflow.substitute(item["value"], values)
            elif "secretKeyRef" in item["valueFrom"]:
                assert item["valueFrom"]["secretKeyRef"]["optional"], item  # MLflow's login: none here
            else:
                ref = item["valueFrom"]["resourceFieldRef"]
                assert ref["resource"] == "limits.cpu"
                env[item["name"]] = workflow.cpu_limit_threads(container["resources"])
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (the child writes it; closed at exit)
        log.write(" ".join(argv) + "\n")
        log.flush()
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def finish(self, name: str, procs: list[subprocess.Popen], names: list[str]) -> None:
        """Waits for the processes, sampling each one's memory, and records the peaks."""
        deadline = time.monotonic() + STEP_TIMEOUT
        watched = [psutil.Process(p.pid) for p in procs]
        while any(p.poll() is None for p in procs):
            for proc, what in zip(watched, names, strict=True):
                self.peaks[what] = max(self.peaks.get(what, 0), tree_rss(proc))
            if time.monotonic() > deadline:
                for q in procs:
                    q.kill()
                raise AssertionError(f"{name} timed out:\n{self.tail(name)}")
            time.sleep(SAMPLE_SECONDS)
        if any(p.returncode for p in procs):
            raise AssertionError(f"{name} failed ({[p.returncode for p in procs]}):\n{self.tail(name)}")

    def tail(self, prefix: str) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-25:])
            for p in sorted(self.logs.glob(f"{prefix}*.log"))
        )

    def run_container(self, name: str, template: dict) -> None:
        c = template["container"]
        self.limits[name] = quantity_bytes(c["resources"]["limits"]["memory"])
        self.finish(name, [self.start(name, self.argv(c, self.values), self.env(c, self.values))], [name])

    def run_tfjob(self, name: str, template: dict, item: str) -> None:
        values = {**self.values, "inputs.parameters.model": item, "item": item}
        tfjob = yaml.safe_load(workflow.substitute(template["resource"]["manifest"], values))
        replicas = tfjob["spec"]["tfReplicaSpecs"]
        assert list(replicas) == ["Worker"]
        worker = replicas["Worker"]
        [c] = [c for c in worker["template"]["spec"]["containers"] if c["name"] == "tensorflow"]
        n = int(worker["replicas"])
        ports = free_ports(n)
        procs, names = [], []
        limit = quantity_bytes(
            yaml.safe_load(workflow.substitute("{{workflow.parameters.worker-limits}}", values))["memory"]
        )
        for i in range(n):
            env = self.env(c, values)
            if n > 1:  # the operator sets TF_CONFIG only for more than one replica
                env["TF_CONFIG"] = json.dumps(
                    {
                        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                        "task": {"type": "worker", "index": i},
                        "environment": "cloud",
                    }
                )
            names.append(f"{name}-{item}-worker-{i}")
            self.limits[names[-1]] = limit
            procs.append(self.start(names[-1], self.argv(c, values), env))
        self.finish(f"{name}-{item}", procs, names)


@pytest.fixture
def server(tmp_path):
    if not (ROOT / "jobs" / "serve.py").exists():
        pytest.skip("jobs/serve.py does not exist yet: nothing to stand in for TF Serving")
    work = tmp_path / "work"
    (work / "models" / "fmnist").mkdir(parents=True)
    [port] = free_ports(1)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the server writes it until killed)
    proc = subprocess.Popen(
        server_argv(sys.executable, work / "models" / "fmnist", port),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
    )
    yield work, f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_workflow_steps_run_locally_and_serve_a_model(tmp_path, server):
    work, url = server
    wf = workflow.load()
    values = workflow.sample_values(
        wf,
        {
            "dataset": "synthetic",
            "epochs": "1",
            "workers": "2",
            "models": MODELS,
            "min-accuracy": "0.5",
            "serving-url": url,
            "mlflow-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
        model="",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    runner = Runner(wf, work, values, logs)
    templates = workflow.templates(wf)
    ran = []
    for task in workflow.dag_order(wf):
        template = templates[task["template"]]
        if "withParam" in task:
            for item in fan_out(task, values):
                assert "resource" in template, "the fan-out trains through TFJobs"
                runner.run_tfjob(task["name"], template, item)
        elif "container" in template:
            runner.run_container(task["name"], template)
        else:
            raise AssertionError(f"task {task['name']}: unexpected template kind")
        ran.append(task["name"])
        if task["name"] == "promote":
            versions = [p.name for p in (work / "models" / "fmnist").iterdir() if p.name.isdigit()]
            assert versions, "promote wrote no model version under models/fmnist"
            # ... and pointed the model servers' config file at them (what TF Serving loads).
            config = (work / "models" / "serving.config").read_text()
            assert 'name: "fmnist"' in config and f'base_path: "{work / "models" / "fmnist"}"' in config
    assert ran == ["ingest", "train", "evaluate", "promote", "wait-serving", "smoke", "canary"]
    with urllib.request.urlopen(f"{url}/v1/models/fmnist", timeout=10) as response:
        status = json.load(response)["model_version_status"]
    assert any(s["state"] == "AVAILABLE" for s in status)
    report = ", ".join(f"{name} {peak / MIB:.0f}" for name, peak in runner.peaks.items())
    print(f"\n[parity] peak resident MiB per process tree: {report}")
    over = {
        name: f"{peak / MIB:.0f} MiB > {runner.limits[name] / MIB:.0f} MiB"
        for name, peak in runner.peaks.items()
        if peak >= runner.limits[name]
    }
    assert not over, f"over the pod's memory limit: {over}"
    assert len([n for n in runner.peaks if "-worker-" in n]) == 2 * len(MODELS.split(","))
