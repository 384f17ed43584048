"""The kustomize component `monitoring` as rendered with the local overlay: its ServiceMonitors,
PodMonitor and PrometheusRule against the Prometheus Operator v0.93.0 CRDs' schemas (the ones
kube-prometheus-stack installs; unknown fields rejected as tests/cluster does for Argo's and the
operator's), what they select exists with the ports and labels they name, the job names they
give are the ones the rules read, the dashboards are the generated ones, and the knobs in
settings.yaml reach every object."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml

from monitoring import generate
from tests.cluster import openapi, render
from tests.observability.rules import rule_files, selectors

pytestmark = pytest.mark.cluster

CRD_PATH = "github.com/prometheus-operator/prometheus-operator/v0.93.0/example/prometheus-operator-crd"
CRD_URL = (
    "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/v0.93.0/example/prometheus-operator-crd"
)
KINDS = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}
GROUP = "monitoring.coreos.com"


@pytest.fixture(scope="module")
def mirror():
    try:
        return render.source()
    except render.Unavailable as err:
        pytest.skip(f"cannot render the kustomizations: {err}")


@pytest.fixture(scope="module")
def docs(mirror) -> list[dict]:
    return render.render("overlays/local", ("monitoring",), images={"fmnist-jobs": "0123456789ab"}, mirror=mirror)


@pytest.fixture(scope="module")
def schemas(mirror) -> dict[str, dict]:
    """Kind -> the v1 OpenAPI schema, from the pinned CRDs: the mirror, else the network."""
    out = {}
    for kind, plural in KINDS.items():
        name = f"{GROUP}_{plural}.yaml"
        if mirror is not None:
            text = (mirror / CRD_PATH / name).read_text()
        else:
            with urllib.request.urlopen(f"{CRD_URL}/{name}", timeout=30) as answer:  # noqa: S310 (a pinned https URL)
                text = answer.read().decode()
        crd = yaml.safe_load(text)
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        out[kind] = version["schema"]["openAPIV3Schema"]
    return out


def monitoring_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["apiVersion"].startswith(f"{GROUP}/")]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        assert e["operator"] in ("Exists", "DoesNotExist"), e  # the only ones used here
        ok &= (e["key"] in labels) == (e["operator"] == "Exists")
    return ok


def test_the_component_renders_its_objects(docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in monitoring_objects(docs))
    assert kinds == [
        ("PodMonitor", "workflow-controller"),
        ("PrometheusRule", "fmnist"),
        ("ServiceMonitor", "tf-serving"),
        ("ServiceMonitor", "training-operator"),
    ]
    assert not [d for d in docs if d["metadata"]["name"] == "monitoring-settings"], "settings.yaml is local-config"


def test_monitoring_objects_match_the_prometheus_operator_crds(docs, schemas):
    for doc in monitoring_objects(docs):
        assert openapi.errors(schemas[doc["kind"]], doc) == [], doc["metadata"]["name"]


def test_the_validation_rejects_unknown_fields_and_bad_values(docs, schemas):
    monitor = copy.deepcopy(find(docs, "ServiceMonitor", "tf-serving"))
    monitor["spec"]["endpoints"][0]["paths"] = "/metrics"
    assert openapi.errors(schemas["ServiceMonitor"], monitor)
    pod_monitor = copy.deepcopy(find(docs, "PodMonitor", "workflow-controller"))
    pod_monitor["spec"]["podMetricsEndpoints"][0]["scheme"] = "tls"
    assert openapi.errors(schemas["PodMonitor"], pod_monitor)
    rule = copy.deepcopy(find(docs, "PrometheusRule", "fmnist"))
    rule["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    assert openapi.errors(schemas["PrometheusRule"], rule)


def test_everything_goes_to_the_monitoring_namespace_with_the_release_label(docs):
    for doc in monitoring_objects(docs):
        assert doc["metadata"]["namespace"] == "monitoring", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", doc["metadata"]["name"]
    for name in ("fmnist-dashboard-serving", "fmnist-dashboard-pipeline"):
        board = find(docs, "ConfigMap", name)["metadata"]
        assert board["namespace"] == "monitoring" and board["labels"]["grafana_dashboard"] == "1"


def test_the_serving_monitor_selects_each_model_server_once(docs):
    """The Service tf-serving, not the headless per-track ones that select the same pods (each
    pod would be scraped twice); its port, path and the pods' `track` label exist."""
    monitor = find(docs, "ServiceMonitor", "tf-serving")
    spec = monitor["spec"]
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"].get("namespace") == "fmnist"]
    chosen = [s["metadata"]["name"] for s in services if selects(spec["selector"], s["metadata"].get("labels", {}))]
    assert chosen == ["tf-serving"]
    assert spec["namespaceSelector"] == {"matchNames": ["fmnist"]}
    service = find(docs, "Service", "tf-serving")
    assert spec["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The job label the rules read: the Service's own value of jobLabel.
    assert service["metadata"]["labels"][spec["jobLabel"]] == "tf-serving"
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "monitoring.config" in d.get("data", {}))
    assert f'path: "{spec["endpoints"][0]["path"]}"' in config["data"]["monitoring.config"]
    for name in ("tf-serving", "tf-serving-canary"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selects(service["spec"]["selector"], pod) and spec["podTargetLabels"] == ["track"] and "track" in pod


def test_the_controller_monitors_find_their_metrics(docs):
    argo = find(docs, "PodMonitor", "workflow-controller")["spec"]
    controller = find(docs, "Deployment", "workflow-controller")["spec"]["template"]
    assert selects(argo["selector"], controller["metadata"]["labels"])
    assert controller["metadata"]["labels"][argo["jobLabel"]] == "workflow-controller"
    ports = {p.get("name"): p["containerPort"] for p in controller["spec"]["containers"][0]["ports"]}
    endpoint = argo["podMetricsEndpoints"][0]
    assert ports[endpoint["port"]] == 9090 and endpoint["scheme"] == "https"  # metricsConfig.secure: true
    assert not [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "workflow-controller-metrics"]

    operator = find(docs, "ServiceMonitor", "training-operator")["spec"]
    service = find(docs, "Service", "training-operator")
    assert service["metadata"]["namespace"] == "kubeflow"
    assert operator["namespaceSelector"] == {"matchNames": ["kubeflow"]}
    assert selects(operator["selector"], service["metadata"]["labels"])
    assert service["metadata"]["labels"][operator["jobLabel"]] == "training-operator"
    port = next(p for p in service["spec"]["ports"] if p["name"] == operator["endpoints"][0]["port"])
    assert port["targetPort"] == 8080  # the operator's --metrics-bind-address default


def test_the_rules_read_the_jobs_the_monitors_give():
    jobs = set()
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                jobs |= {m["job"] for _, m in selectors(rule["expr"]) if "job" in m}
    assert jobs == {"tf-serving", "workflow-controller", "training-operator"}


def test_the_prometheus_rule_holds_every_rules_file(docs, tmp_path):
    rule = find(docs, "PrometheusRule", "fmnist")
    groups = [g for path in rule_files() for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == groups
    # As the operator hands it to Prometheus: one rules file of those groups, which promtool takes.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run hack/prometheus.sh ensure as root", pytrace=False)
    out = tmp_path / "rule.yaml"
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dashboards_are_the_generated_files(docs):
    for name, path in (("serving", "fmnist-serving.json"), ("pipeline", "fmnist-pipeline.json")):
        data = find(docs, "ConfigMap", f"fmnist-dashboard-{name}")["data"]
        assert json.loads(data[path]) == json.loads((generate.DASHBOARDS / path).read_text())


def test_the_knobs_reach_every_object(mirror):
    """settings.yaml changed as a user would: another release, monitoring namespace and app
    namespace, and every object follows."""
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        tree = render.copy_tree(Path(tmp), mirror)
        settings = tree / "components" / "monitoring" / "settings.yaml"
        text = settings.read_text()
        for old, new in (
            ("release: kube-prometheus-stack", "release: prom"),
            ("namespace: monitoring", "namespace: observability"),
            ("app-namespace: fmnist", "app-namespace: ml"),
        ):
            assert old in text
            text = text.replace(old, new)
        settings.write_text(text)
        wrapper = Path(tmp) / "wrapper"
        wrapper.mkdir()
        # The component alone: its knobs act on its own objects.
        (wrapper / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "components: [../kustomize/components/monitoring]\n"
        )
        out = subprocess.run(
            [render.kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(wrapper)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr
    docs = [d for d in map(render.parse, render.DOCUMENT.split(out.stdout)) if d]
    for doc in monitoring_objects(docs):
        assert doc["metadata"]["namespace"] == "observability" and doc["metadata"]["labels"]["release"] == "prom"
    for name in ("tf-serving",):
        assert find(docs, "ServiceMonitor", name)["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    assert find(docs, "PodMonitor", "workflow-controller")["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    assert find(docs, "ConfigMap", "fmnist-dashboard-serving")["metadata"]["namespace"] == "observability"


def test_deploy_with_the_component_needs_kube_prometheus_stack_first(tmp_path):
    """`COMPONENTS=monitoring make deploy` on a cluster without the Prometheus Operator's CRDs
    stops before it applies anything, with one line saying what to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "cat", "head", "git", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    calls = tmp_path / "calls"
    (bin_dir / "kubectl").write_text(
        f"#!{shutil.which('bash')}\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        '  "version --client -o yaml") echo \'  minor: "35"\' ;;\n'
        "  version*) ;;\n"
        '  "get crd "*) exit 1 ;;\n'
        '  *) echo "unexpected: kubectl $*" >&2; exit 3 ;;\n'
        "esac\n"
    )
    (bin_dir / "kubectl").chmod(0o755)
    proc = subprocess.run(
        [str(bin_dir / "bash"), "hack/deploy.sh"],
        cwd=render.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "COMPONENTS": "monitoring"},
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "error: COMPONENTS=monitoring needs kube-prometheus-stack installed first (its CRDs are missing): "
        "docs/monitoring.md\n"
    )
    assert not [c for c in calls.read_text().splitlines() if c.startswith(("apply", "kustomize"))]
