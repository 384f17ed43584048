"""Reference integrity of the render: every name one object uses to find another resolves to
an object in the rendered install (or in the workflow), or is on the short list of objects that
something creates at run time, with the step that creates it.

What would otherwise fail only on a cluster: a binding whose ServiceAccount subject names a
namespace the account is not in (the API accepts it, and the account simply has no rights), a
pod waiting for a ConfigMap, Secret or claim that nobody creates, a Service that selects no pod
or targets a port no container has, a webhook pointing at a Service that does not exist."""

from __future__ import annotations

import copy

import pytest

from tests.cluster import workflow
from tests.cluster.test_policy import workflow_pods

APP_NAMESPACE = "fmnist"

# (kind, namespace, name) -> what creates it at run time. Nothing else may be missing.
CREATED_AT_RUN_TIME = {
    ("ConfigMap", APP_NAMESPACE, "fmnist-image"): "make image (hack/image.sh records the imported image)",
    ("ServiceAccount", APP_NAMESPACE, "default"): "the cluster (every namespace gets one)",
    ("ServiceAccount", "kubeflow", "default"): "the cluster (every namespace gets one)",
    ("Secret", APP_NAMESPACE, "mlflow-auth"): "the user, before make deploy OVERLAY=cluster (components/mlflow-auth)",
}

# The overlays a user applies, each with the workflow that runs on it.
OVERLAYS = ["overlays/local", "overlays/local+all", "overlays/local-nodes", "overlays/cluster", "overlays/cluster+gpu"]


def index(docs: list[dict]) -> set[tuple[str, str | None, str]]:
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}


def resolve(objects: set, kind: str, namespace: str | None, name: str, where: str) -> str | None:
    """None when the object exists (or is created at run time), else the problem."""
    key = (kind, namespace, name)
    if key in objects or key in CREATED_AT_RUN_TIME:
        return None
    return f"{where}: {kind} {namespace + '/' if namespace else ''}{name} does not exist in the render"


def pods(docs: list[dict], wf: dict) -> list[tuple[str, str, dict, dict]]:
    """(where, namespace, pod labels, pod spec) of every pod template, and the workflow's pods."""
    out = []
    for d in docs:
        template = (d.get("spec") or {}).get("template")
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
            out.append(
                (
                    f"{d['kind']}/{d['metadata']['name']}",
                    d["metadata"]["namespace"],
                    template["metadata"].get("labels", {}),
                    template["spec"],
                )
            )
    for pod in workflow_pods(wf):
        spec = {"serviceAccountName": wf["spec"]["serviceAccountName"], **pod["spec"]}
        out.append((f"workflow pod {pod['metadata']['name']}", APP_NAMESPACE, pod["metadata"]["labels"], spec))
    return out


def binding_problems(docs: list[dict], objects: set) -> list[str]:
    problems = []
    for d in docs:
        if d["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        where = f"{d['kind']}/{d['metadata']['name']}"
        namespace = d["metadata"].get("namespace")
        role_namespace = namespace if d["roleRef"]["kind"] == "Role" else None
        problems.append(resolve(objects, d["roleRef"]["kind"], role_namespace, d["roleRef"]["name"], where))
        for subject in d.get("subjects", []):
            if subject["kind"] != "ServiceAccount":
                continue
            # The API requires a namespace on a ClusterRoleBinding's ServiceAccount subject; in a
            # RoleBinding an empty one means the binding's own namespace (the RBAC authorizer).
            sa_namespace = subject.get("namespace") or (namespace if d["kind"] == "RoleBinding" else None)
            if sa_namespace is None:
                problems.append(f"{where}: ServiceAccount subject {subject['name']} has no namespace")
                continue
            problems.append(resolve(objects, "ServiceAccount", sa_namespace, subject["name"], where))
    return [p for p in problems if p]


def pod_problems(docs: list[dict], wf: dict, objects: set) -> list[str]:
    problems = []
    for where, namespace, _, spec in pods(docs, wf):
        problems.append(resolve(objects, "ServiceAccount", namespace, spec.get("serviceAccountName", "default"), where))
        if spec.get("priorityClassName"):
            problems.append(resolve(objects, "PriorityClass", None, spec["priorityClassName"], where))
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                problems.append(
                    resolve(objects, "PersistentVolumeClaim", namespace, v["persistentVolumeClaim"]["claimName"], where)
                )
            if "configMap" in v and not v["configMap"].get("optional"):
                problems.append(resolve(objects, "ConfigMap", namespace, v["configMap"]["name"], where))
            if "secret" in v and not v["secret"].get("optional"):
                problems.append(resolve(objects, "Secret", namespace, v["secret"]["secretName"], where))
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = {v["name"] for v in spec.get("volumes", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in names:
                    problems.append(f"{where}/{c['name']}: mounts volume {m['name']!r}, which the pod does not have")
            for e in c.get("env", []):
                ref = e.get("valueFrom") or {}
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in ref and not ref[key].get("optional"):
                        problems.append(resolve(objects, kind, namespace, ref[key]["name"], where))
    return [p for p in problems if p]


def service_problems(docs: list[dict], wf: dict) -> list[str]:
    problems = []
    all_pods = pods(docs, wf)
    for d in docs:
        if d["kind"] != "Service":
            continue
        where = f"Service {d['metadata']['namespace']}/{d['metadata']['name']}"
        selector = d["spec"].get("selector") or {}
        matching = [
            spec
            for _, namespace, labels, spec in all_pods
            if namespace == d["metadata"]["namespace"] and selector and selector.items() <= labels.items()
        ]
        if not matching:
            problems.append(f"{where}: its selector {selector} matches no pod template")
            continue
        for port in d["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for spec in matching:
                ports = [p for c in spec["containers"] for p in c.get("ports", [])]
                if not any(p.get("name") == target or p["containerPort"] == target for p in ports):
                    problems.append(f"{where}: port {port.get('name')} targets {target!r}, which no container exposes")
    return problems


def other_problems(docs: list[dict], wf: dict, objects: set) -> list[str]:
    problems = []
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for hook in d["webhooks"]:
                service = hook["clientConfig"].get("service")
                if service:
                    problems.append(resolve(objects, "Service", service["namespace"], service["name"], where))
        if d["kind"] == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            problems.append(resolve(objects, ref["kind"], d["metadata"]["namespace"], ref["name"], where))
        if d["kind"] == "PodDisruptionBudget":
            selector = d["spec"]["selector"]["matchLabels"]
            if not any(
                ns == d["metadata"]["namespace"] and selector.items() <= labels.items()
                for _, ns, labels, _ in pods(docs, wf)
            ):
                problems.append(f"{where}: its selector {selector} matches no pod template")
    # The workflow: its parameters from ConfigMaps, its memoization cache.
    for p in wf["spec"]["arguments"]["parameters"]:
        ref = (p.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            problems.append(
                resolve(objects, "ConfigMap", APP_NAMESPACE, ref["name"], f"workflow parameter {p['name']}")
            )
            cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"]), None)
            if cm is not None and ref["key"] not in cm.get("data", {}):
                problems.append(f"workflow parameter {p['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
    # The executor's account and the token Secret Argo mounts for it (found by its name).
    executor = (wf["spec"].get("executor") or {}).get("serviceAccountName")
    if executor:
        problems.append(resolve(objects, "ServiceAccount", APP_NAMESPACE, executor, "workflow executor"))
        token = f"{executor}.service-account-token"
        problems.append(resolve(objects, "Secret", APP_NAMESPACE, token, "workflow executor's token"))
    for t in wf["spec"]["templates"]:
        cache = ((t.get("memoize") or {}).get("cache") or {}).get("configMap")
        if cache:
            problems.append(
                resolve(objects, "ConfigMap", APP_NAMESPACE, cache["name"], f"template {t['name']}'s cache")
            )
    return [p for p in problems if p]


# What make deploy applies for an overlay besides the overlay itself (hack/deploy.sh): on a
# shared cluster the cluster-wide part and the training operator come from their own targets.
ALSO_APPLIED = {"overlays/cluster": ["overlays/cluster-admin", "addons/training-operator"]}


@pytest.fixture(scope="module", params=OVERLAYS)
def install(request, rendered):
    extra = ALSO_APPLIED.get(request.param.split("+")[0], [])
    return request.param, rendered[request.param] + [d for target in extra for d in rendered[target]]


def test_binding_subjects_and_roles_exist(install):
    name, docs = install
    assert binding_problems(docs, index(docs)) == [], name


def test_what_pods_mount_and_read_exists(install, wf):
    name, docs = install
    assert pod_problems(docs, wf, index(docs)) == [], name


def test_services_select_pods_and_target_their_ports(install, wf):
    name, docs = install
    assert service_problems(docs, wf) == [], name


def test_webhooks_autoscalers_and_workflow_references_exist(install, wf):
    name, docs = install
    assert other_problems(docs, wf, index(docs)) == [], name


def test_the_checks_catch_broken_references(overlay, wf):
    """Each check fails on the breakage it is for, among them the one this project shipped once:
    the operator's ClusterRoleBinding naming fmnist/training-operator (the overlay's namespace
    transformer with setRoleBindingSubjects: allServiceAccounts)."""
    docs = copy.deepcopy([d for d in overlay if d["kind"] != "CustomResourceDefinition"])
    crb = next(d for d in docs if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "training-operator")
    crb["subjects"][0]["namespace"] = APP_NAMESPACE
    assert binding_problems(docs, index(docs)) == [
        "ClusterRoleBinding/training-operator: ServiceAccount fmnist/training-operator does not exist in the render"
    ]
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    mlflow["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "nope"
    assert any("PersistentVolumeClaim fmnist/nope" in p for p in pod_problems(docs, wf, index(docs)))
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow")
    service["spec"]["ports"][0]["targetPort"] = "web"
    assert any("targets 'web'" in p for p in service_problems(docs, wf))
    service["spec"]["selector"] = {"app.kubernetes.io/name": "mlfow"}
    assert any("matches no pod template" in p for p in service_problems(docs, wf))
    broken = copy.deepcopy(wf)
    broken["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "fmnist-wrok"
    assert any("fmnist-wrok" in p for p in pod_problems(overlay, broken, index(overlay)))
    param = next(p for p in broken["spec"]["arguments"]["parameters"] if p["name"] == "worker-limits")
    param["valueFrom"]["configMapKeyRef"]["key"] = "limits"
    assert any("has no key limits" in p for p in other_problems(overlay, broken, index(overlay)))


def test_run_time_objects_are_created_by_the_named_step():
    image_script = (workflow.ROOT / "hack" / "image.sh").read_text()
    assert "create configmap fmnist-image" in image_script
