"""Past one node: storage every node can reach, workers and model servers spread across nodes,
nothing that mounts the work volume pinned to one node, serving kept through a drain.

The overlays: `local` (one k3d node, local-path ReadWriteOnce), `local-nodes` (several k3d
nodes sharing one host folder as a ReadWriteMany volume), `cluster` (a real cluster: a
ReadWriteMany class the user names, the image from a registry). Rendering, strict schemas,
policy and reference integrity of all of them run in the other files of tests/cluster."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.cluster import render, workflow
from tests.cluster.test_policy import workflow_pods

WORK_CLAIM = "fmnist-work"
# Overlays where more than one node may mount the work volume.
MULTI_NODE = ["overlays/local-nodes", "overlays/cluster", "overlays/cluster+gpu"]
HOSTNAME = "kubernetes.io/hostname"


def find(docs, kind, name):
    [match] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return match


def pods_mounting_the_work_volume(docs: list[dict], wf: dict) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        template = (d.get("spec") or {}).get("template")
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
            out.append((f"{d['kind']}/{d['metadata']['name']}", template["spec"]))
    for pod in workflow_pods(wf):
        out.append((pod["metadata"]["name"], pod["spec"]))
    return [
        (where, spec)
        for where, spec in out
        if any((v.get("persistentVolumeClaim") or {}).get("claimName") == WORK_CLAIM for v in spec.get("volumes", []))
    ]


def pinned_to_a_node(spec: dict) -> str | None:
    """Why a pod can only run on one node, or None."""
    if spec.get("nodeName"):
        return f"nodeName {spec['nodeName']}"
    if HOSTNAME in (spec.get("nodeSelector") or {}):
        return f"nodeSelector {HOSTNAME}"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms", []):
        for expr in term.get("matchExpressions", []) + term.get("matchFields", []):
            if expr["key"] in (HOSTNAME, "metadata.name"):
                return f"required node affinity on {expr['key']}"
    return None


@pytest.mark.parametrize("name", MULTI_NODE)
def test_the_work_volume_is_read_write_many_where_several_nodes_mount_it(rendered, name):
    claim = find(rendered[name], "PersistentVolumeClaim", WORK_CLAIM)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"].get("storageClassName") not in (None, "local-path")


def test_one_node_keeps_local_path(rendered):
    claim = find(rendered["overlays/local"], "PersistentVolumeClaim", WORK_CLAIM)
    assert (claim["spec"]["accessModes"], claim["spec"]["storageClassName"]) == (["ReadWriteOnce"], "local-path")


def test_k3d_nodes_share_one_host_folder_as_the_volume(rendered):
    docs = rendered["overlays/local-nodes"]
    claim = find(docs, "PersistentVolumeClaim", WORK_CLAIM)
    [pv] = [d for d in docs if d["kind"] == "PersistentVolume"]
    assert pv["spec"]["storageClassName"] == claim["spec"]["storageClassName"]
    find(docs, "StorageClass", pv["spec"]["storageClassName"])
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"], "the claim binds the volume by name"
    assert "nodeAffinity" not in pv["spec"], "a volume any node can mount"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    # The path is where hack/cluster.sh mounts the host folder into every node.
    script = (render.ROOT / "hack" / "cluster.sh").read_text()
    [node_path] = re.findall(r"^NODE_SHARED_PATH=(\S+)$", script, re.M)
    assert pv["spec"]["hostPath"] == {"path": node_path, "type": "Directory"}
    assert '--volume "${SHARED_DIR}:${NODE_SHARED_PATH}@server:*;agent:*"' in script
    # MLflow keeps its own single-node volume.
    mlflow = find(docs, "PersistentVolumeClaim", "mlflow-data")
    assert mlflow["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("name", ["overlays/local", *MULTI_NODE])
def test_no_pod_that_mounts_the_work_volume_is_pinned_to_one_node(rendered, wf, name):
    mounting = pods_mounting_the_work_volume(rendered[name], wf)
    assert {w for w, _ in mounting} >= {"Deployment/tf-serving", "e2e-ingest", "fmnist-e2e-x7k2p-cnn-worker-0"}
    pinned = {where: why for where, spec in mounting if (why := pinned_to_a_node(spec))}
    assert not pinned


def test_the_pin_check_catches_a_pin():
    assert pinned_to_a_node({"nodeSelector": {HOSTNAME: "k3d-fmnist-agent-0"}})
    assert pinned_to_a_node(
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            }
        }
    )
    assert pinned_to_a_node({"containers": []}) is None


def soft_spread(spec: dict, labels: dict) -> dict:
    [rule] = [c for c in spec.get("topologySpreadConstraints", []) if c["topologyKey"] == HOSTNAME]
    assert rule["whenUnsatisfiable"] == "ScheduleAnyway", "soft: one node still schedules them all"
    assert rule["maxSkew"] == 1
    selector = rule["labelSelector"]["matchLabels"]
    assert selector.items() <= labels.items(), "the rule counts the pods it spreads"
    return selector


def test_training_workers_spread_across_nodes(wf):
    train = workflow.templates(wf)["train"]
    tfjob = workflow.manifest_with_expressions(train)
    template = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    # The operator labels each pod with its TFJob's name (pkg/controller.v1/common/
    # job_controller.go GenLabels at v1.9.4): the rule spreads one job's workers.
    operator_labels = {"training.kubeflow.org/job-name": tfjob["metadata"]["name"]}
    selector = soft_spread(template["spec"], {**template["metadata"]["labels"], **operator_labels})
    assert selector == operator_labels
    assert not pinned_to_a_node(template["spec"])


@pytest.mark.parametrize("name", ["overlays/local", *MULTI_NODE])
def test_model_servers_spread_and_one_survives_a_drain(rendered, name):
    docs = rendered[name]
    serving = find(docs, "Deployment", "tf-serving")
    labels = serving["spec"]["template"]["metadata"]["labels"]
    selector = soft_spread(serving["spec"]["template"]["spec"], labels)
    pdb = find(docs, "PodDisruptionBudget", "tf-serving")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert find(docs, "HorizontalPodAutoscaler", "tf-serving")["spec"]["minReplicas"] == 2


def test_the_real_cluster_overlay_has_nothing_k3d_specific(rendered):
    docs = rendered["overlays/cluster"]
    assert not [d for d in docs if d["kind"] == "PersistentVolume"], "volumes come from the user's storage class"
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in docs if d["kind"] == "Service"), (
        "no servicelb"
    )
    assert "local-path" not in yaml.safe_dump(docs)
    claim = find(docs, "PersistentVolumeClaim", WORK_CLAIM)
    assert claim["spec"]["storageClassName"] == "fmnist-rwx", "the placeholder hack/deploy.sh replaces"
    assert "STORAGE_CLASS" in (render.ROOT / "hack" / "deploy.sh").read_text()
    # GPU combines with it.
    gpu = find(rendered["overlays/cluster+gpu"], "ConfigMap", "fmnist-pipeline")["data"]
    assert gpu["image-suffix"] == "-gpu" and "nvidia.com/gpu" in gpu["worker-limits"]


def test_every_overlay_uses_one_namespace_transformer():
    local = (render.KUSTOMIZE / "overlays" / "local" / "namespace.yaml").read_text()
    cluster = (render.KUSTOMIZE / "overlays" / "cluster" / "namespace.yaml").read_text()
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("#")]  # noqa: E731
    assert strip(local) == strip(cluster)
    nodes = yaml.safe_load((render.KUSTOMIZE / "overlays" / "local-nodes" / "kustomization.yaml").read_text())
    assert "../local" in nodes["resources"], "local-nodes is the local overlay plus shared storage"
    # The overlays a user applies, and the cluster-wide part make deploy applies before one.
    assert set(render.OVERLAYS) | {"cluster-admin"} == {p.name for p in (render.KUSTOMIZE / "overlays").iterdir()}
