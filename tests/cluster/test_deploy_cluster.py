"""A shared cluster's install in two parts, and no second Argo or training operator.

overlays/cluster holds namespaced objects only, which a namespace owner applies; the
cluster-wide part (the namespace, the CRDs, the training operator, webhooks and ClusterRoles,
Argo's PriorityClass) is overlays/cluster-admin plus addons/argo-crds and
addons/training-operator, which `make deploy OVERLAY=cluster` applies when the caller may
create CRDs and only checks otherwise. An Argo controller or a training operator that `make
deploy` did not install (any namespace, any installer: told by the field manager of its
Deployment) stops it, or, for the operator on a shared cluster, is used instead of its own.
hack/deploy.sh runs here with a kubectl that answers from a table and records its calls.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cluster.test_scripts import run_without_tools, with_tools

CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "StorageClass",
    "PersistentVolume",
}


def kinds(docs) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_the_namespace_owners_part_is_namespaced_and_the_admins_part_cluster_wide(rendered):
    owner, admin = rendered["overlays/cluster"], rendered["overlays/cluster-admin"]
    assert not [k for k in kinds(owner) if k[0] in CLUSTER_SCOPED]
    assert {d["metadata"].get("namespace") for d in owner} == {"fmnist"}
    assert {k[0] for k in kinds(admin)} <= CLUSTER_SCOPED
    # Together with the CRDs and the operator, nothing of the local install is missing.
    together = kinds(owner + admin + rendered["addons/training-operator"] + rendered["addons/argo-crds"])
    local = {k for k in kinds(rendered["overlays/local"]) if k[0] != "NetworkPolicy"}
    assert local - together == set()
    # And the namespace owner may grant what the overlay's Roles grant: escalate and bind.
    [owner_role] = [
        d for d in admin if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "fmnist-namespace-owner"
    ]
    assert {"escalate", "bind"} <= set(owner_role["rules"][0]["verbs"])


def fake_kubectl(bin_dir: Path, deployments: str | None, admin: bool, missing: tuple[str, ...] = ()) -> Path:
    """deployments: the lines `get deployments --all-namespaces` prints (None: forbidden)."""
    calls = bin_dir / "calls.log"
    listing = bin_dir / "deployments.txt"
    listing.write_text(deployments or "")
    gets = "\n".join(f'  "get {m}"*) exit 1 ;;' for m in missing)
    (bin_dir / "kubectl").write_text(
        f"""#!{shutil.which("bash")}
echo "kubectl $*" >> {calls}
case "$*" in
  "version --client -o yaml") echo '  minor: "35"' ;;
  "get nodes -o name") echo node/ip-10-0-1-5 ;;
  "get deployments --all-namespaces"*) {"cat " + str(listing) if deployments is not None else "exit 1"} ;;
  "auth can-i create customresourcedefinitions"*) {"echo yes" if admin else "echo no; exit 1"} ;;
{gets}
  "kustomize "*) echo "# rendered $2" ;;
  "apply "*|"create "*) cat > /dev/null ;;
  *) ;;
esac
"""
    )
    (bin_dir / "kubectl").chmod(0o755)
    return calls


def deploy(tmp_path, deployments: str | None, admin: bool = True, missing=(), **env):
    tmp_path.mkdir(parents=True, exist_ok=True)
    with_tools(tmp_path, "grep", "sleep", "tail", "mktemp", "rm", "awk")
    calls = fake_kubectl(tmp_path / "bin", deployments, admin, missing)
    proc = run_without_tools(tmp_path, "hack/deploy.sh", **env)
    applied = [line.split()[-1] for line in calls.read_text().splitlines() if line.startswith("kubectl kustomize ")]
    return proc, applied


CLUSTER = {"OVERLAY": "cluster", "STORAGE_CLASS": "efs-sc"}
OURS = (
    "fmnist/workflow-controller\tquay.io/argoproj/workflow-controller:v4.1.2\tfmnist-deploy kube-controller-manager\n"
)


def test_an_argo_it_did_not_install_stops_it(tmp_path):
    theirs = "argo/argo-workflows-workflow-controller\tquay.io/argoproj/workflow-controller:v3.6.5\thelm\n"
    proc, applied = deploy(tmp_path, OURS + theirs)
    assert proc.returncode == 1 and applied == []
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: an Argo Workflows controller that make deploy did not install runs already "
            "(argo/argo-workflows-workflow-controller): a second one would run the same workflows twice"
        )
    )


def test_its_own_earlier_install_is_no_obstacle(tmp_path):
    proc, applied = deploy(tmp_path, OURS)
    assert proc.returncode == 0, proc.stderr
    assert applied[:2] == ["kustomize/addons/argo-crds", "kustomize/overlays/local"]


def test_a_shared_clusters_operator_is_used_not_doubled(tmp_path):
    theirs = "kubeflow/training-operator\tkubeflow/training-operator:v1-855e096\tmanager\n"
    proc, applied = deploy(tmp_path, theirs, **CLUSTER)
    assert proc.returncode == 0, proc.stderr
    assert ">> using the training operator that runs already: kubeflow/training-operator" in proc.stdout
    assert "kustomize/addons/training-operator" not in applied
    assert applied[:2] == ["kustomize/addons/argo-crds", "kustomize/overlays/cluster-admin"]
    # On k3d the local overlay brings its own: refused, rather than a second one.
    proc, applied = deploy(tmp_path / "k3d", theirs)
    assert proc.returncode == 1 and "OVERLAY=local would install a second one" in proc.stderr


def test_an_administrator_applies_the_cluster_wide_part_first(tmp_path):
    proc, applied = deploy(tmp_path, "", **CLUSTER)
    assert proc.returncode == 0, proc.stderr
    assert applied[:3] == [
        "kustomize/addons/argo-crds",
        "kustomize/addons/training-operator",
        "kustomize/overlays/cluster-admin",
    ]
    assert "/.deploy." in applied[3], "then the namespace owner's part (with the storage class)"


def test_a_namespace_owner_gets_the_cluster_wide_part_checked(tmp_path):
    proc, applied = deploy(tmp_path, None, admin=False, **CLUSTER)
    assert proc.returncode == 0, proc.stderr
    assert ">> you may not list Deployments in every namespace" in proc.stdout
    assert ">> you may not create cluster-wide objects" in proc.stdout
    assert not [a for a in applied if "addons/" in a or "cluster-admin" in a], applied
    proc, _ = deploy(tmp_path / "again", None, admin=False, missing=("crd/tfjobs.kubeflow.org",), **CLUSTER)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: crd/tfjobs.kubeflow.org does not exist, and creating it needs a cluster administrator: "
        "see kustomize/overlays/cluster-admin/kustomization.yaml"
    )


@pytest.mark.parametrize("admin", [True, False])
def test_mlflows_login_secret_is_asked_for(tmp_path, admin):
    proc, _ = deploy(tmp_path, "", admin=admin, missing=("secret mlflow-auth",), **CLUSTER)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no Secret mlflow-auth in fmnist, MLflow's admin and the pipeline's login: ")
    assert "kubectl -n fmnist create secret generic mlflow-auth --from-literal=username=admin" in last
