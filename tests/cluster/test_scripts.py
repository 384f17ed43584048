"""The scripts: shellcheck over hack/*.sh and .ci/run, and the behaviour that needs no cluster
(prerequisites named with their pinned versions, bad input refused with one line)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster import render

ROOT = render.ROOT
SCRIPTS = sorted((ROOT / "hack").glob("*.sh")) + [p for p in [ROOT / ".ci" / "run"] if p.exists()]


def shellcheck() -> str:
    found = shutil.which("shellcheck") or (
        str(ROOT / ".venv/bin/shellcheck") if (ROOT / ".venv/bin/shellcheck").exists() else None
    )
    if not found:
        pytest.skip("shellcheck is not installed (it comes with the venv: make venv)")
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script):
    proc = subprocess.run(
        [shellcheck(), "--external-sources", str(script.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


CLUSTER_SCRIPTS = ["cluster.sh", "image.sh", "deploy.sh", "pipeline.sh", "status.sh", "cluster-ui.sh", "smoke.sh"]


@pytest.mark.parametrize("name", CLUSTER_SCRIPTS)
def test_cluster_scripts_have_the_house_shape(name):
    text = (ROOT / "hack" / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -o errexit -o nounset -o pipefail" in text
    assert 'cd "$(dirname "${BASH_SOURCE[0]}")/.."' in text
    assert "\nmain() {" in text and text.rstrip().endswith('main "$@"')
    assert os.access(ROOT / "hack" / name, os.X_OK)


def run_without_tools(tmp_path: Path, *argv: str, **env) -> subprocess.CompletedProcess:
    """Runs a script with a PATH that has bash and coreutils but none of the cluster tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "dirname", "sed", "cat", "head", "cut", "tr", "git", "env", "mktemp", "rm"):
        path = shutil.which(tool)
        if path and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(path)
    return subprocess.run(
        [str(bin_dir / "bash"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # STATUS=cluster: make status's cluster part (by default it shows local mode first).
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "VENV": "/nonexistent", "STATUS": "cluster", **env},
    )


@pytest.mark.parametrize(
    "script, expected",
    [
        ("hack/cluster.sh up", "error: docker not found: install Docker"),
        ("hack/cluster.sh down", "error: k3d not found: install k3d v5.9.0"),
        ("hack/pipeline.sh", "error: argo not found: install the argo CLI v4.1.2"),
        ("hack/smoke.sh", "error: argo not found: install the argo CLI v4.1.2"),
        # kubectl comes from the venv when it is not on PATH; then there is no cluster to answer.
        ("hack/deploy.sh", "error: no cluster answers"),
        ("hack/status.sh", "error: no cluster answers"),
    ],
)
def test_missing_prerequisites_are_one_clear_line(tmp_path, script, expected):
    proc = run_without_tools(tmp_path, *script.split())
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(expected), proc.stderr


def fake_tool(bin_dir: Path, name: str, output: str) -> None:
    (bin_dir / name).write_text(f"#!{shutil.which('bash')}\necho '{output}'\n")
    (bin_dir / name).chmod(0o755)


def test_wrong_versions_are_named(tmp_path):
    run_without_tools(tmp_path, "-c", "true")
    fake_tool(tmp_path / "bin", "docker", "")
    fake_tool(tmp_path / "bin", "k3d", "k3d version v5.6.0")
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up")
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "error: k3d v5.6.0 found, v5.9.0 needed: install k3d v5.9.0: "
        "curl -s https://raw.githubusercontent.com/k3d-io/k3d/main/install.sh | TAG=v5.9.0 bash"
    )
    fake_tool(tmp_path / "bin", "k3d", "k3d version v5.9.0")
    fake_tool(tmp_path / "bin", "kubectl", "")
    fake_tool(tmp_path / "bin", "argo", "argo: v3.6.2")
    proc = run_without_tools(tmp_path, "hack/pipeline.sh")
    assert "1.34 or newer" in proc.stderr and proc.returncode != 0


def test_bad_input_is_one_line(tmp_path):
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "sideways")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: usage: hack/cluster.sh up|down (got 'sideways')"


def test_image_tag_is_the_commit_plus_a_content_hash_when_dirty(tmp_path):
    repo = tmp_path / "repo"
    (repo / "hack").mkdir(parents=True)
    shutil.copy(ROOT / "hack" / "lib.sh", repo / "hack" / "lib.sh")
    (repo / "jobs").mkdir()
    (repo / "jobs" / "a.py").write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    tag = ["bash", "-c", "set -euo pipefail; source hack/lib.sh; image_tag"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert subprocess.run(tag, cwd=repo, capture_output=True, text=True).returncode != 0  # no commit yet
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert subprocess.run(tag, cwd=repo, capture_output=True, text=True).stdout.strip() == commit
    (repo / "jobs" / "a.py").write_text("x = 2\n")
    dirty = subprocess.run(tag, cwd=repo, capture_output=True, text=True).stdout.strip()
    assert dirty.startswith(f"{commit}-dirty-") and len(dirty) == len(commit) + 15
    (repo / "jobs" / "a.py").write_text("x = 3\n")
    assert subprocess.run(tag, cwd=repo, capture_output=True, text=True).stdout.strip() not in (dirty, commit)
