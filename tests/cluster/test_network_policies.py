"""The cluster overlay's NetworkPolicies, as a table of connections that must be allowed and
connections that must be denied, decided over the rendered policies and the pods as the
install and the workflows make them (tests/cluster/netpol.py has the rules Kubernetes applies).

Without any NetworkPolicy (this project before the cluster overlay had them) every pod could
reach argo-server, MLflow and the TFJob workers: the "denied" half of the table fails.
"""

from __future__ import annotations

import pytest

from tests.cluster import workflow
from tests.cluster.netpol import Address, Pod, allowed
from tests.cluster.test_policy import workflow_pods

NS = "fmnist"
API = Address("the API server's endpoint", "10.0.0.1")
INTERNET = Address("storage.googleapis.com", "142.250.74.110")


def container_ports(spec: dict) -> dict:
    return {
        p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
        for c in spec.get("containers", [])
        for p in c.get("ports", [])
        if "name" in p
    }


@pytest.fixture(scope="module")
def world(rendered, wf, rollback_wf):
    docs = rendered["overlays/cluster"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {}
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"].get("namespace") == NS:
            template = d["spec"]["template"]
            pods[d["metadata"]["name"]] = Pod(
                d["metadata"]["name"], NS, template["metadata"]["labels"], container_ports(template["spec"])
            )
    for flow in (wf, rollback_wf):
        for pod in workflow_pods(flow):
            name = pod["metadata"]["name"]
            labels = {**pod["metadata"]["labels"], "workflows.argoproj.io/workflow": "fmnist-e2e-x7k2p"}
            if "-worker-" in name:  # the operator's own labels on a worker (pkg/controller.v1/common)
                labels |= {"training.kubeflow.org/job-name": name.rsplit("-worker-", 1)[0]}
                labels |= {"training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "0"}
                name = "worker"
            pods[name.removeprefix("e2e-")] = Pod(name, NS, labels, container_ports(pod["spec"]))
    # The pods of resource templates (the train step's wait, the exit handler) carry the
    # workflow's pod labels and the template's.
    for name, template in workflow.templates(wf).items():
        if "resource" in template and name != "train":
            pods[name] = Pod(name, NS, {**wf["spec"]["podMetadata"]["labels"], **template["metadata"]["labels"]})
    pods["worker-1"] = Pod("worker-1", NS, pods["worker"].labels, pods["worker"].ports)
    pods["kube-dns"] = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP")})
    pods["prometheus"] = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    pods["client"] = Pod("shop-frontend", "shop", {"app": "frontend"})
    pods["api"], pods["internet"] = API, INTERNET
    return policies, pods


ALLOWED = [
    ("ingest", "mlflow", 5000),
    ("worker", "mlflow", 5000),
    ("worker", "worker-1", 2222),
    ("promote", "mlflow", 5000),
    ("wait-serving", "tf-serving", 8501),
    ("smoke", "tf-serving", 8501),
    ("canary", "tf-serving-canary", 8501),
    ("canary", "tf-serving", 8501),
    ("rollback", "tf-serving", 8501),
    ("rollback", "mlflow", 5000),
    ("close-canary", "mlflow", 5000),
    ("prometheus", "tf-serving", 8501),
    ("prometheus", "tf-serving-canary", 8501),
    ("prometheus", "workflow-controller", 9090),
    ("client", "tf-serving", 8501),
    ("client", "tf-serving", 8500),
    ("workflow-controller", "api", 6443),
    ("argo-server", "api", 443),
    ("ingest", "api", 6443),
    ("evaluate", "api", 6443),
    ("suspend-tfjob", "api", 6443),
    ("rollback", "api", 6443),
    ("ingest", "internet", 443),
]
DENIED = [
    ("client", "mlflow", 5000),
    ("client", "argo-server", 2746),
    ("client", "workflow-controller", 9090),
    ("client", "worker", 2222),
    ("prometheus", "mlflow", 5000),
    ("prometheus", "argo-server", 2746),
    ("smoke", "argo-server", 2746),
    ("worker", "argo-server", 2746),
    ("worker", "api", 6443),
    ("worker", "internet", 443),
    ("worker", "tf-serving", 8501),
    ("ingest", "worker", 2222),
    ("ingest", "internet", 80),
    ("mlflow", "internet", 443),
    ("mlflow", "api", 6443),
    ("tf-serving", "mlflow", 5000),
    ("tf-serving", "internet", 443),
    ("tf-serving", "api", 6443),
    ("tf-serving-canary", "tf-serving", 8501),
]


@pytest.mark.parametrize("source, target, port", ALLOWED, ids=lambda v: str(v))
def test_the_pipelines_flows_are_allowed(world, source, target, port):
    policies, pods = world
    assert allowed(policies, pods[source], pods[target], port), f"{source} -> {target}:{port} is blocked"


@pytest.mark.parametrize("source, target, port", DENIED, ids=lambda v: str(v))
def test_everything_else_is_denied(world, source, target, port):
    policies, pods = world
    assert not allowed(policies, pods[source], pods[target], port), f"{source} -> {target}:{port} is open"


def test_every_pod_resolves_names_and_is_isolated(world):
    policies, pods = world
    for name, pod in pods.items():
        if isinstance(pod, Pod) and pod.namespace == NS:
            assert allowed(policies, pod, pods["kube-dns"], 53, "UDP"), name
            assert not allowed(policies, pods["client"], pod, 9999), f"{name} takes any connection"


def test_the_table_covers_every_pod_of_the_namespace(world):
    _, pods = world
    named = {s for s, _, _ in ALLOWED + DENIED} | {t for _, t, _ in ALLOWED + DENIED}
    ours = {n for n, p in pods.items() if isinstance(p, Pod) and p.namespace == NS}
    assert ours - named == set(), "every pod of the namespace has its row"


def test_the_evaluator_follows_the_api():
    a = Pod("a", "x", {"role": "a"})
    b = Pod("b", "x", {"role": "b"}, {"http": (80, "TCP")})
    c = Pod("c", "y", {"role": "a"})
    policy = {
        "metadata": {"namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "a"}}}], "ports": [{"port": "http"}]}],
        },
    }
    assert allowed([policy], a, b, 80)
    assert not allowed([policy], a, b, 81), "another port"
    assert not allowed([policy], c, b, 80), "a podSelector alone means the policy's namespace"
    assert allowed([policy], b, a, 1234), "a is not isolated"
    both = {
        **policy["spec"],
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "a"}}}]}],
    }
    assert allowed([{**policy, "spec": both}], c, b, 80), "with a namespaceSelector, any namespace"
    assert allowed([], a, INTERNET, 443), "no policy: nothing isolated"
