"""The scripts: shellcheck over hack/*.sh and .ci/run, and the behaviour that needs no cluster
(prerequisites named with their pinned versions, bad input refused with one line)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

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


CLUSTER_SCRIPTS = [
    "cluster.sh",
    "image.sh",
    "deploy.sh",
    "pipeline.sh",
    "status.sh",
    "cluster-ui.sh",
    "smoke.sh",
    "rollback.sh",
    "diagnose.sh",
    "tools.sh",
    "actionlint.sh",
    "image-digests.sh",
    "kill-worker.sh",
]


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


def test_rollback_in_the_cluster_needs_argo(tmp_path):
    proc = run_without_tools(tmp_path, "hack/rollback.sh", WHERE="cluster", REASON="a reason")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: argo not found: install the argo CLI v4.1.2: " + (
        "https://github.com/argoproj/argo-workflows/releases/tag/v4.1.2"
    )


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


def fake_kubectl(bin_dir: Path, raw_exit: int, raw_output: str) -> None:
    """A kubectl that knows a running cluster with one model server pod; `get --raw` answers
    with raw_output and raw_exit."""
    (bin_dir / "kubectl").write_text(
        f"""#!{shutil.which("bash")}
case "$*" in
  "version --client -o yaml") echo '  minor: "35"' ;;
  *--raw*) echo '{raw_output}'; exit {raw_exit} ;;
  *"-o jsonpath={{.items[0].metadata.name}}"*) echo tf-serving-7d9c-abcde ;;
  *) echo "kubectl $*" ;;
esac
"""
    )
    (bin_dir / "kubectl").chmod(0o755)


@pytest.mark.parametrize(
    "exit_code, output, expected",
    [
        # TF Serving answers 404 for a model it has not loaded (before the first pipeline).
        (
            1,
            "Error from server (NotFound): the server could not find the requested resource",
            "no model served yet: tf-serving-7d9c-abcde is up",
        ),
        (0, '{"model_version_status": [{"version": "3", "state": "AVAILABLE"}]}', '"state":"AVAILABLE"'),
        (1, "Error from server (ServiceUnavailable): the server is currently unable", "does not answer"),
    ],
)
def test_status_says_when_no_model_is_served(tmp_path, exit_code, output, expected):
    run_without_tools(tmp_path, "-c", "true")
    fake_kubectl(tmp_path / "bin", exit_code, output)
    for tool in ("tail", "tr", "cut"):
        if not (tmp_path / "bin" / tool).exists():
            (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    proc = run_without_tools(tmp_path, "hack/status.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout.splitlines()[-1], proc.stdout


def fake_k3s_cluster(bin_dir: Path, created_after: int, exists: bool = True, nodes: int = 1) -> Path:
    """docker, k3d and a kubectl whose k3s add-on Deployments appear only after `created_after`
    GETs (as k3s applies its manifests a little after the node is Ready); `rollout status` of a
    Deployment that does not exist yet fails, as kubectl does. The cluster exists (or not) and
    has `nodes` nodes. Returns the call log of all three."""
    calls = bin_dir / "calls.log"
    fake_tool(bin_dir, "docker", "")
    (bin_dir / "k3d").write_text(
        f"#!{shutil.which('bash')}\n"
        f'echo "k3d $*" >> {calls}\n'
        f'case "$*" in "version") echo "k3d version v5.9.0" ;;\n'
        f'  "cluster get"*) exit {0 if exists else 1} ;;\n'
        "esac\n"
    )
    node_names = "\\n".join(f"node/k3d-fmnist-{'server' if i == 0 else 'agent'}-{max(i - 1, 0)}" for i in range(nodes))
    (bin_dir / "kubectl").write_text(
        f"""#!{shutil.which("bash")}
echo "$*" >> {calls}
gets=$(grep -c '^get -n kube-system deployment/' {calls} || true)
case "$*" in
  "version --client -o yaml") echo '  minor: "35"' ;;
  "get -n kube-system deployment/"*) (( gets > {created_after} )) || exit 1 ;;
  "rollout status"*) (( gets > {created_after} )) || {{ echo 'Error from server (NotFound)' >&2; exit 1; }} ;;
  "config current-context") echo k3d-fmnist ;;
  "get nodes -o name") printf '{node_names}\\n' ;;
  *) ;;
esac
"""
    )
    for tool in ("k3d", "kubectl"):
        (bin_dir / tool).chmod(0o755)
    return calls


def test_make_cluster_waits_for_k3s_add_ons_to_exist_before_their_rollout(tmp_path):
    run_without_tools(tmp_path, "-c", "true")
    for tool in ("grep", "sleep", "tail"):
        (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    calls = fake_k3s_cluster(tmp_path / "bin", created_after=2)
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = calls.read_text().splitlines()
    rollouts = [i for i, line in enumerate(log) if line.startswith("rollout status")]
    gets = [i for i, line in enumerate(log) if line.startswith("get -n kube-system deployment/")]
    assert len(rollouts) == 2 and all(any(g < r for g in gets) for r in rollouts)
    assert "cluster fmnist is ready" in proc.stdout


def test_make_cluster_names_an_add_on_that_never_appears(tmp_path):
    run_without_tools(tmp_path, "-c", "true")
    for tool in ("grep", "sleep", "tail"):
        (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    fake_k3s_cluster(tmp_path / "bin", created_after=10**6)
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up", WAIT_TIMEOUT="4s")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: kube-system/deployment/local-path-provisioner was not created within 4s (what exists is listed above)"
    )


def test_a_bad_wait_timeout_is_one_line(tmp_path):
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up", WAIT_TIMEOUT="5m")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: WAIT_TIMEOUT must be whole seconds such as 300s, not '5m'"


@pytest.mark.parametrize(
    "gpu, expected",
    [
        ("2", "error: GPU must be 0 or 1, not '2'"),
        (
            "1",
            "error: requirements/jobs-gpu.txt does not exist: the GPU variant installs that lock "
            "(tensorflow[and-cuda]); run 'make lock'",
        ),
    ],
)
def test_image_gpu_input_is_checked(tmp_path, gpu, expected):
    if gpu == "1" and (ROOT / "requirements" / "jobs-gpu.txt").exists():
        pytest.skip("the GPU lock exists: the build test below covers it")
    proc = run_without_tools(tmp_path, "hack/image.sh", GPU=gpu)
    assert proc.returncode != 0 and proc.stderr.strip() == expected


@pytest.mark.parametrize(
    "gpu, suffix, lock", [("0", "", "requirements/jobs.txt"), ("1", "-gpu", "requirements/jobs-gpu.txt")]
)
def test_image_builds_the_variant_and_records_it(tmp_path, gpu, suffix, lock):
    """In a copy of the repository with both locks: the build installs the variant's lock, the
    tag gets its suffix, and the ConfigMap records the base tag and the imported variant."""
    repo = tmp_path / "repo"
    for part in ("hack", "infra", "jobs", "requirements", "kustomize"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "requirements" / "jobs-gpu.txt").write_text("tensorflow[and-cuda]==2.20.0\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    bin_dir = tmp_path / "bin"
    run_without_tools(tmp_path, "-c", "true")
    calls = tmp_path / "calls.log"
    for tool in ("docker", "k3d", "kubectl"):
        (bin_dir / tool).write_text(
            f'#!{shutil.which("bash")}\necho "{tool} $*" >> {calls}\n'
            'case "$*" in "version") echo "k3d version v5.9.0" ;;\n'
            '  "version --client -o yaml") echo \'  minor: "35"\' ;;\n'
            "esac\n"
        )
        (bin_dir / tool).chmod(0o755)
    proc = subprocess.run(
        [str(bin_dir / "bash"), "hack/image.sh"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "GPU": gpu},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = calls.read_text()
    assert (
        f"docker build --file infra/Dockerfile --build-arg REQUIREMENTS={lock} --tag fmnist-jobs:{commit}{suffix} ."
        in log
    )
    assert f"k3d image import fmnist-jobs:{commit}{suffix} --cluster fmnist" in log
    assert f'"image": "fmnist-jobs:{commit}", "imported{suffix}": "fmnist-jobs:{commit}"' in log


def with_tools(tmp_path: Path, *tools: str) -> None:
    run_without_tools(tmp_path, "-c", "true")
    for tool in tools:
        if not (tmp_path / "bin" / tool).exists():
            (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))


def test_make_cluster_nodes_3_shares_one_host_folder_with_every_node(tmp_path):
    with_tools(tmp_path, "grep", "sleep", "tail", "mkdir", "chmod")
    calls = fake_k3s_cluster(tmp_path / "bin", created_after=0, exists=False, nodes=3)
    shared = tmp_path / "shared"
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up", NODES="3", SHARED_DIR=str(shared))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [create] = [line for line in calls.read_text().splitlines() if line.startswith("k3d cluster create")]
    assert create == (
        "k3d cluster create fmnist --config infra/k3d.yaml --agents 2 "
        f"--volume {shared}:/var/lib/fmnist/shared@server:*;agent:*"
    )
    assert shared.is_dir() and oct(shared.stat().st_mode & 0o777) == "0o777", "writable by the pods' UID"


def test_make_cluster_refuses_a_node_count_the_existing_cluster_does_not_have(tmp_path):
    with_tools(tmp_path, "grep", "sleep", "tail")
    fake_k3s_cluster(tmp_path / "bin", created_after=0, exists=True, nodes=1)
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up", NODES="3")
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "error: the k3d cluster fmnist has 1 node(s), NODES=3 asks for 3: 'make down' first, or leave NODES as it was"
    )


@pytest.mark.parametrize("nodes", ["0", "three", "-1"])
def test_bad_nodes_is_one_line(tmp_path, nodes):
    proc = run_without_tools(tmp_path, "hack/cluster.sh", "up", NODES=nodes)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: NODES must be a whole number of nodes, 1 or more, not '{nodes}'"


def fake_deploy_cluster(bin_dir: Path, node_names: list[str]) -> Path:
    """A kubectl for hack/deploy.sh that records what it would apply, and git for the tag."""
    calls = bin_dir / "calls.log"
    applied = bin_dir / "applied.yaml"
    names = "\\n".join(node_names)
    (bin_dir / "kubectl").write_text(
        f"""#!{shutil.which("bash")}
echo "kubectl $*" >> {calls}
case "$*" in
  "version --client -o yaml") echo '  minor: "35"' ;;
  "get nodes -o name") printf '{names}\\n' ;;
  "kustomize "*) cat "$2/kustomization.yaml" 2>/dev/null; echo "# rendered $2" ;;
  "apply "*) cat >> {applied} ;;
  "rollout status"*|"wait "*) exit 0 ;;
  *) ;;
esac
"""
    )
    (bin_dir / "kubectl").chmod(0o755)
    return calls


@pytest.mark.parametrize(
    "nodes, env, overlay",
    [
        (["node/k3d-fmnist-server-0"], {}, "local"),
        (["node/k3d-fmnist-server-0", "node/k3d-fmnist-agent-0", "node/k3d-fmnist-agent-1"], {}, "local-nodes"),
        (["node/ip-10-0-1-5", "node/ip-10-0-2-7"], {"OVERLAY": "cluster", "STORAGE_CLASS": "efs-sc"}, "cluster"),
    ],
)
def test_deploy_picks_the_overlay_for_the_cluster(tmp_path, nodes, env, overlay):
    with_tools(tmp_path, "grep", "sleep", "tail", "mktemp", "rm", "awk")
    calls = fake_deploy_cluster(tmp_path / "bin", nodes)
    proc = run_without_tools(tmp_path, "hack/deploy.sh", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f">> overlay {overlay}" in proc.stdout
    applied = (tmp_path / "bin" / "applied.yaml").read_text()
    if overlay == "cluster":
        # A wrapper that sets the storage class on the work volume.
        assert f"resources: [../kustomize/overlays/{overlay}]" in applied
        assert '"path": "/spec/storageClassName", "value": "efs-sc"' in applied
    else:
        assert f"# rendered kustomize/overlays/{overlay}" in applied
    assert "kubectl kustomize kustomize/addons/argo-crds" in calls.read_text()


@pytest.mark.parametrize(
    "nodes, env, expected",
    [
        (
            ["node/ip-10-0-1-5", "node/ip-10-0-2-7"],
            {},
            "error: this cluster has several nodes and is not the k3d cluster fmnist: "
            "use OVERLAY=cluster STORAGE_CLASS=<a ReadWriteMany class>",
        ),
        (
            ["node/ip-10-0-1-5"],
            {"OVERLAY": "cluster"},
            "error: OVERLAY=cluster needs STORAGE_CLASS, a ReadWriteMany storage class for the work volume "
            "(kubectl get storageclass)",
        ),
        (
            ["node/a"],
            {"OVERLAY": "cluster", "STORAGE_CLASS": "Bad_Name"},
            "error: STORAGE_CLASS 'Bad_Name' is not a storage class name",
        ),
        (
            ["node/a"],
            {"OVERLAY": "nowhere"},
            "error: OVERLAY: no kustomize/overlays/nowhere (have: ",
        ),
    ],
)
def test_deploy_refuses_what_would_not_work(tmp_path, nodes, env, expected):
    with_tools(tmp_path, "grep", "sleep", "tail", "mktemp", "rm", "awk")
    fake_deploy_cluster(tmp_path / "bin", nodes)
    proc = run_without_tools(tmp_path, "hack/deploy.sh", **env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == expected or (expected.endswith("(have: ") and last.startswith(expected)), last


def test_image_push_needs_a_registry(tmp_path):
    proc = run_without_tools(tmp_path, "hack/image.sh", PUSH="1")
    assert proc.returncode != 0
    assert (
        proc.stderr.strip() == "error: PUSH=1 needs REGISTRY, the registry your cluster pulls from (e.g. ghcr.io/<you>)"
    )
