"""A second `make deploy` applies cleanly, after the cluster's controllers and a person have
changed what the first one applied.

Server-side apply (Kubernetes 1.35, `staging/src/k8s.io/apimachinery/pkg/util/managedfields`,
docs "Server-Side Apply", Conflicts) refuses an apply that sets a field another field manager
owns to a different value; a field set to the same value becomes shared, a field the applier
leaves out is not touched. A struct marked atomic is one field: PersistentVolume
`spec.claimRef` is an ObjectReference (`+structType=atomic`, `staging/src/k8s.io/api/core/v1/
types.go`), which the PV binder completes with the claim's uid and resourceVersion and then
owns (`pkg/controller/volume/persistentvolume/pv_controller.go`, bindVolumeToClaim). A
`kubectl edit` makes `kubectl-edit` the owner of each field it changed.

What this test does without an API server: it runs hack/deploy.sh with a kubectl that records
its calls and renders the real overlays, evaluates the recorded label selectors on the
render to get what is applied and what is only created, and replays what the controllers and
a person change after the first deploy (the binder, the memoization cache's writer, every
`kubectl edit` the docs tell a person to run) against the next apply.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cluster import render
from tests.cluster.test_scripts import run_without_tools, with_tools

DOCS = [render.ROOT / "README.md", *sorted((render.ROOT / "docs").glob("*.md"))]
SOURCES = [*DOCS, *sorted((render.ROOT / "kustomize").rglob("*.yaml")), *sorted((render.ROOT / "workflows").glob("*"))]
EDIT = re.compile(r"kubectl\s+(?:-n\s+\S+\s+)?edit\s+(?:-n\s+\S+\s+)?(\w+)\s+(?:-n\s+\S+\s+)?([a-z0-9][-a-z0-9.]*)")
KINDS = {"configmap": "ConfigMap", "cm": "ConfigMap", "deployment": "Deployment", "secret": "Secret"}


def edited_by_hand() -> set[tuple[str, str]]:
    """(kind, name) of every object the docs and manifest comments say to `kubectl edit`."""
    found = set()
    for path in SOURCES:
        text = re.sub(r"\s*\n\s*#?\s*", " ", path.read_text())  # commands wrapped over lines
        for kind, name in EDIT.findall(text):
            found.add((KINDS[kind.lower()], name))
    return found


def selected(selector: str, labels: dict[str, str]) -> bool:
    """A label selector of `k=v` / `k!=v` terms (a `!=` term also matches a missing label)."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=")
            if labels.get(key) == value:
                return False
        else:
            key, value = term.split("=")
            if labels.get(key) != value:
                return False
    return True


def fake_kubectl(bin_dir: Path, rendered_file: Path, calls: Path) -> None:
    (bin_dir / "kubectl").write_text(
        f"""#!{shutil.which("bash")}
echo "kubectl $*" >> {calls}
case "$*" in
  "version --client -o yaml") echo '  minor: "35"' ;;
  "get nodes -o name") echo node/k3d-fmnist-server-0 ;;
  "kustomize kustomize/overlays/"*) cat {rendered_file} ;;
  "kustomize "*) echo "kind: CustomResourceDefinition" ;;
  "apply "*|"create "*) cat > /dev/null ;;
  "rollout status"*|"wait "*) exit 0 ;;
  *) ;;
esac
"""
    )
    (bin_dir / "kubectl").chmod(0o755)


def selector_of(call: str) -> str:
    """The call's label selector ("": none, every object of the render)."""
    found = re.findall(r"--selector=(\S+)", call)
    return found[0] if found else ""


@pytest.fixture(scope="module", params=["local", "local-nodes"])
def deployed(request, rendered, tmp_path_factory):
    """(render, objects applied, objects only created) of `make deploy` for one overlay."""
    docs = rendered[f"overlays/{request.param}"]
    tmp = tmp_path_factory.mktemp("deploy")
    with_tools(tmp, "grep", "sleep", "tail", "mktemp", "rm", "awk")
    rendered_file, calls = tmp / "rendered.yaml", tmp / "calls.log"
    rendered_file.write_text(yaml.safe_dump_all(docs))
    fake_kubectl(tmp / "bin", rendered_file, calls)
    env = {"OVERLAY": request.param} if request.param != "local" else {}
    proc = run_without_tools(tmp, "hack/deploy.sh", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = calls.read_text().splitlines()
    [apply] = [c for c in log if c.startswith("kubectl apply ") and "--server-side" in c and "argo-crds" not in c][-1:]
    creates = [c for c in log if c.startswith("kubectl create ")]
    applied = [d for d in docs if selected(selector_of(apply), d["metadata"].get("labels", {}))]
    created = [d for c in creates for d in docs if selected(selector_of(c), d["metadata"].get("labels", {}))]
    assert len(applied) + len(created) == len(docs), "every object is either applied or created"
    return docs, applied, created


def key(d: dict) -> tuple[str, str]:
    return d["kind"], d["metadata"]["name"]


def owned_elsewhere(docs: list[dict]) -> list[tuple[tuple[str, str], tuple[str, ...], object]]:
    """(object, field path, value) of what others own after the first deploy and a first run."""
    out = []
    for d in docs:
        if d["kind"] == "PersistentVolume":  # the binder, bindVolumeToClaim: the whole struct
            ref = {"kind": "PersistentVolumeClaim", "namespace": "fmnist", "name": "fmnist-work", "uid": "9f2c"}
            out.append((key(d), ("spec", "claimRef"), {**ref, "apiVersion": "v1", "resourceVersion": "4711"}))
        if d["kind"] == "PersistentVolumeClaim":  # the binder, or the provisioner's volume
            out.append((key(d), ("spec", "volumeName"), d["spec"].get("volumeName", "pvc-4c1d")))
        if key(d) == ("ConfigMap", "fmnist-ingest-cache"):  # configmap_cache.go Save, an Update
            for label in ("workflows.argoproj.io/configmap-type",):
                out.append((key(d), ("metadata", "labels", label), "Cache"))
            out.append((key(d), ("data", "ingest-format1-garments2-fashion-mnist"), '{"nodeID": "x"}'))
    for kind, name in edited_by_hand():  # a person's kubectl edit: every key of its data, changed
        d = next((d for d in docs if key(d) == (kind, name)), None)
        assert d is not None, f"the docs tell a person to edit {kind} {name}, which the install does not have"
        for field in d.get("data", {}):
            out.append((key(d), ("data", field), f"{d['data'][field]} (edited)"))
    return out


def conflicts(applied: list[dict], changes) -> list[str]:
    """The fields another manager owns that this apply sets to another value."""
    by_key = {key(d): d for d in applied}
    found = []
    for obj, path, theirs in changes:
        node = by_key.get(obj)
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and node != theirs:
            found.append(f"{obj}: {'.'.join(path)}: ours {node!r}, theirs {theirs!r}")
    return found


def test_a_second_deploy_conflicts_with_nothing(deployed):
    docs, applied, _ = deployed
    assert conflicts(applied, owned_elsewhere(docs)) == []


def test_no_applied_volume_carries_a_claim_ref(deployed):
    _, applied, _ = deployed
    assert not [d for d in applied if d["kind"] == "PersistentVolume" and "claimRef" in d["spec"]]


def test_what_the_docs_tell_a_person_to_edit_is_created_once_never_applied(deployed):
    docs, applied, created = deployed
    hand = edited_by_hand()
    assert ("ConfigMap", "fmnist-settings") in hand
    assert {key(d) for d in created} == hand
    assert not hand & {key(d) for d in applied}


def test_the_old_manifests_would_conflict(deployed):
    """What this project shipped before: the volume's claimRef applied, and the settings a
    person edits applied with the rest (then in the ConfigMap fmnist-pipeline)."""
    docs, applied, created = deployed
    old = [dict(d) for d in applied + created]
    for d in old:
        if d["kind"] == "PersistentVolume":
            d["spec"] = {**d["spec"], "claimRef": {"namespace": "fmnist", "name": "fmnist-work"}}
    changes = owned_elsewhere(docs)
    if any(d["kind"] == "PersistentVolume" for d in old):
        assert any("claimRef" in c for c in conflicts(old, changes))
    assert any("fmnist-settings" in c and "data.train-parallelism" in c for c in conflicts(old, changes))


def test_the_selector_evaluation():
    assert selected("fmnist/apply!=create-only", {})
    assert not selected("fmnist/apply!=create-only", {"fmnist/apply": "create-only"})
    assert selected("fmnist/apply=create-only", {"fmnist/apply": "create-only", "x": "y"})
    assert not selected("fmnist/apply=create-only", {})
