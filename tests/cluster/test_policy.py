"""Policy over what the cluster runs: checkov over the rendered install and the workflow's
pods, plus our own rules (pinned images, requests and limits, non-root, minimal RBAC)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster import render, workflow

CHECKOV = render.ROOT / ".venv-checkov" / "bin" / "checkov"

# Checks that do not fit, each with the reason:
SKIPPED_CHECKS = {
    # k3d imports the jobs image into the node (`k3d image import`); `Always` would make the
    # kubelet pull it from a registry that does not have it (FACTS: k3d#920). Every image
    # here is an immutable release tag or a commit tag, so IfNotPresent is safe.
    "CKV_K8S_15": "Image Pull Policy should be Always",
    # Tags, not digests: the digests cannot be looked up or verified on a machine without a
    # registry, and the jobs image has no digest before it is pushed. Release tags are pinned
    # and our own tag is the commit (plus a content hash when dirty).
    "CKV_K8S_43": "Image should use digest",
    # Checked here over the local overlay, a single user's k3d cluster, which has none;
    # overlays/cluster has them (components/network-policies, tests/cluster/test_network_policies.py).
    "CKV2_K8S_6": "Minimize the admission of pods which lack an associated NetworkPolicy",
    # The training operator manages its own validating webhook configuration (upstream RBAC).
    "CKV_K8S_155": "Minimize ClusterRoles that grant control over admission webhook configurations",
    # The controllers (training operator, Argo controller and server) talk to the API server:
    # they need their service account token. Our own pods do not mount it.
    "CKV_K8S_38": "Ensure that Service Account Tokens are only mounted where necessary",
    # MLflow's client reads MLFLOW_TRACKING_USERNAME/PASSWORD from the environment, which is how
    # the jobs log in (the contract: the jobs read them from there); from a Secret,
    # optional, never written in a manifest.
    "CKV_K8S_35": "Prefer using secrets as files over secrets as environment variables",
    # Argo's images run as their own non-root user (8737); forcing another UID on a third-party
    # image risks its file permissions. Our pods run as 10001.
    "CKV_K8S_40": "Containers should run as a high UID to avoid host conflict",
}

EXPECTED_IMAGES = {
    "ghcr.io/kubeflow/training-v1/training-operator:v1-93c5489",
    "quay.io/argoproj/workflow-controller:v4.1.2",
    "quay.io/argoproj/argocli:v4.1.2",
    "ghcr.io/mlflow/mlflow:v3.17.2",
    "ghcr.io/mlflow/mlflow:v3.17.2-full",
    "tensorflow/serving:2.20.0",
}


def pod_specs(docs: list[dict]):
    """(where, pod spec) for every pod template in Deployments/StatefulSets/Jobs/Pods."""
    for d in docs:
        spec = d.get("spec") or {}
        if d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", spec
        elif "template" in spec and "spec" in spec["template"] and d["kind"] != "PodTemplate":
            yield f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]


def workflow_pods(wf: dict) -> list[dict]:
    """The pods the workflow makes, as Pod objects: one per container template, and the TFJob
    workers (with the parameters as a run sees them)."""
    values = workflow.sample_values(wf)
    pods = []
    for t in wf["spec"]["templates"]:
        if "container" in t:
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"e2e-{t['name']}",
                        "namespace": "fmnist",
                        "labels": {**wf["spec"]["podMetadata"]["labels"], **t["metadata"]["labels"]},
                    },
                    "spec": {
                        "serviceAccountName": wf["spec"]["serviceAccountName"],
                        "securityContext": wf["spec"]["securityContext"],
                        "containers": [{"name": "main", **workflow.substitute_obj(t["container"], values)}],
                        "volumes": wf["spec"]["volumes"],
                    }
                    | {k: wf["spec"][k] for k in ("automountServiceAccountToken",) if k in wf["spec"]},
                }
            )
    for _, tfjob in workflow.embedded_manifests(wf, values):
        template = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{tfjob['metadata']['name']}-worker-0",
                    "namespace": "fmnist",
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            }
        )
    return pods


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


@pytest.fixture(scope="module")
def everything(rendered, wf, rollback_wf) -> list[dict]:
    docs = rendered["overlays/local+all"] + rendered["overlays/local"] + rendered["addons/argo-crds"]
    docs += rendered["overlays/local-nodes"] + rendered["overlays/cluster+gpu"]
    return docs + workflow_pods(wf) + workflow_pods(rollback_wf)


# Batch pods (the workflow's steps and the TFJob workers) serve nothing: no probes to check;
# a hung step is bounded by activeDeadlineSeconds instead.
BATCH_SKIPPED = {
    "CKV_K8S_8": "Liveness Probe Should be Configured",
    "CKV_K8S_9": "Readiness Probe Should be Configured",
}


def checkov(directory: Path, docs: list[dict], skipped: dict[str, str]) -> list[str]:
    directory.mkdir()
    (directory / "rendered.yaml").write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--output",
            "json",
            "--skip-check",
            ",".join(skipped),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["passed"] > 10 and report["summary"]["parsing_errors"] == 0
    return [f"{f['check_id']} {f['check_name']}: {f['resource']}" for f in report["results"]["failed_checks"]]


def test_checkov(tmp_path: Path, rendered, wf, rollback_wf):
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} missing: run make venv")
    install = rendered["overlays/local"] + [
        d
        for d in rendered["overlays/local+arm64-serving"]
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "tf-serving"
    ]
    install[-1] = {**install[-1], "metadata": {**install[-1]["metadata"], "name": "tf-serving-arm64"}}
    failed = checkov(tmp_path / "install", install, SKIPPED_CHECKS)
    pods = workflow_pods(wf) + workflow_pods(rollback_wf)
    failed += checkov(tmp_path / "pipeline", pods, {**SKIPPED_CHECKS, **BATCH_SKIPPED})
    assert not failed, "\n".join(failed)


def test_images_are_pinned(everything, wf):
    seen = set()
    for where, spec in pod_specs(everything):
        for c in all_containers(spec):
            image = c["image"].split("@")[0]  # the tag stays beside a digest (test_image_digests.py)
            seen.add(image)
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{where}: {image} has no tag"
            assert tag != "latest", f"{where}: {image}"
            assert c.get("imagePullPolicy") != "Always", f"{where}: {image}"
    assert seen >= EXPECTED_IMAGES
    assert not [i for i in seen if i.endswith(":set-by-deploy")], "deploy must set the jobs image's tag"
    controller = next(
        d for d in everything if d["kind"] == "Deployment" and d["metadata"]["name"] == "workflow-controller"
    )
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a.split("@")[0] for a in args if a.startswith("--executor-image=")] == [
        "--executor-image=quay.io/argoproj/argoexec:v4.1.2"
    ]


def test_requests_and_limits_everywhere(everything):
    for where, spec in pod_specs(everything):
        for c in all_containers(spec):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}/{c['name']}: {kind}"
    config = next(
        d for d in everything if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "workflow-controller-configmap"
    )
    executor = yaml.safe_load(config["data"]["executor"])
    assert {"cpu", "memory"} <= set(executor["resources"]["requests"]) and {"cpu", "memory"} <= set(
        executor["resources"]["limits"]
    )


def test_pods_run_non_root_without_privileges(everything):
    for where, spec in pod_specs(everything):
        pod_ctx = spec.get("securityContext", {})
        for c in all_containers(spec):
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            assert ctx.get("runAsNonRoot") is True, f"{where}/{c['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}/{c['name']}"
            assert ctx.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
            assert not ctx.get("privileged"), f"{where}/{c['name']}"


def test_no_cluster_admin(everything):
    for d in everything:
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert d["roleRef"]["name"] not in ("cluster-admin", "admin", "edit"), d["metadata"]["name"]
        if d["kind"] in ("ClusterRole", "Role"):
            for rule in d.get("rules", []):
                assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), d["metadata"]["name"]


def bindings_of(docs: list[dict], account: str) -> list[dict]:
    return [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == account and s["kind"] == "ServiceAccount" for s in d.get("subjects") or [])
    ]


def bound_rules(docs: list[dict], wf: dict) -> dict[tuple[str, str], list[str]]:
    """(apiGroup, resource) -> verbs the workflow's executor may use, from its one Role."""
    bindings = bindings_of(docs, wf["spec"]["executor"]["serviceAccountName"])
    assert [(b["kind"], b["roleRef"]["kind"]) for b in bindings] == [("RoleBinding", "Role")], "nothing cluster-wide"
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == bindings[0]["roleRef"]["name"])
    return {
        (g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }


# A resource template's action -> the verbs kubectl needs for it (workflow/executor/resource.go).
ACTION_VERBS = {"create": {"create"}, "patch": {"patch"}, "get": {"get"}}


@pytest.mark.parametrize("name", ["e2e", "rollback"])
def test_pipeline_rbac_is_minimal(overlay, wf, rollback_wf, name):
    flow = wf if name == "e2e" else rollback_wf
    # The jobs' containers get no token and their account no rights.
    assert flow["spec"]["automountServiceAccountToken"] is False
    pods_account = flow["spec"]["serviceAccountName"]
    assert bindings_of(overlay, pods_account) == []
    sa = next(d for d in overlay if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == pods_account)
    assert sa["automountServiceAccountToken"] is False
    # The executor's: its task results; a resource template creates its TFJob, gets it, and the
    # exit handler patches it.
    rules = bound_rules(overlay, flow)
    assert rules == {
        ("argoproj.io", "workflowtaskresults"): ["create", "patch"],
        ("kubeflow.org", "tfjobs"): ["create", "get", "patch"],
    }
    # Only what the workflows use: every resource template's action has its verbs, and every
    # TFJob verb is used by some template (get: the wait after a create).
    used = {"get"}
    for flow_ in (wf, rollback_wf):
        for t in flow_["spec"]["templates"]:
            if "resource" in t:
                assert ACTION_VERBS[t["resource"]["action"]] <= set(rules[("kubeflow.org", "tfjobs")])
                used |= ACTION_VERBS[t["resource"]["action"]]
    assert used == set(rules[("kubeflow.org", "tfjobs")])
    # Argo finds the executor's token Secret by its name (docs/service-account-secrets.md).
    executor = flow["spec"]["executor"]["serviceAccountName"]
    token = next(
        d for d in overlay if d["kind"] == "Secret" and d["metadata"]["name"] == f"{executor}.service-account-token"
    )
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == executor
    memo = next(d for d in overlay if d["kind"] == "Role" and d["metadata"]["name"] == "argo-memoize-cache")
    assert memo["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["fmnist-ingest-cache"],
            "verbs": ["get", "update", "patch"],
        }
    ]


def test_labels(overlay):
    for d in overlay:
        if d["metadata"].get("namespace") == "fmnist" and d["kind"] in (
            "Deployment",
            "Service",
            "PersistentVolumeClaim",
            "ConfigMap",
            "HorizontalPodAutoscaler",
        ):
            labels = d["metadata"].get("labels", {})
            if d["metadata"]["name"] in ("workflow-controller-configmap", "argo-server", "workflow-controller"):
                continue  # upstream's, labelled on their pod templates
            assert {
                "app.kubernetes.io/name",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
            } <= set(labels), f"{d['kind']}/{d['metadata']['name']}"
    for d in overlay:
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels), d["metadata"]["name"]


def test_dockerfile():
    text = (render.ROOT / "infra" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    # A release tag, and its digest where hack/images.txt has one (test_image_digests.py).
    assert froms and all(re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", f) for f in froms), froms
    assert re.search(r"^USER\s+10001", text, re.M)
    assert "requirements/jobs.txt" in text and "TF_USE_LEGACY_KERAS=1" in text
    assert re.search(r"^COPY jobs/ jobs/", text, re.M)
    local = subprocess.run(
        [str(render.ROOT / ".venv" / "bin" / "python"), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    assert froms[0].split(":")[1].startswith(local.stdout.strip() + "."), "same Python minor as the venv"
    ignore = (render.ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 : ignore.index("*") + 3] == ["!jobs/", "!requirements/"]


def test_k3d_config():
    config = yaml.safe_load((render.ROOT / "infra" / "k3d.yaml").read_text())
    assert config["apiVersion"] == "k3d.io/v1alpha5" and config["kind"] == "Simple"
    assert config["image"].split("@")[0] == "rancher/k3s:v1.35.2-k3s1"
    assert config["servers"] == 1
    for port in config["ports"]:
        assert port["port"].startswith("127.0.0.1:"), "only on loopback"
    # The Kubernetes API too: without hostIP k3d binds it on 0.0.0.0 (pkg/config/transform.go
    # at v5.9.0 takes k3d.DefaultAPIHost); with no hostPort the CLI picks a free one.
    assert config["kubeAPI"] == {"hostIP": "127.0.0.1"}
