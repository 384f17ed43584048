"""Schemas: every rendered core object against Kubernetes' own (strict, at the k3s minor), and
every Workflow and TFJob, including the TFJobs embedded in the workflow, against the upstream
CRDs' OpenAPI v3 schemas (unknown fields rejected where the schema does not preserve them). The
monitoring component's Prometheus Operator objects: tests/observability/test_component.py."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.cluster import openapi, workflow
from tests.cluster.conftest import TARGETS

CUSTOM_GROUPS = ("argoproj.io", "kubeflow.org", "monitoring.coreos.com")
PIPELINE_GROUPS = ("argoproj.io", "kubeflow.org")


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS


@pytest.mark.parametrize("name", [t[0] for t in TARGETS])
def test_core_objects_are_valid_kubernetes(rendered, k8s_version, name):
    problems = []
    for doc in rendered[name]:
        if is_custom(doc):
            continue  # custom resources: validated against their CRDs below
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not problems, "\n".join(problems)


def test_no_custom_resources_in_the_install(rendered):
    # The install only defines CRDs; Workflows and TFJobs come from workflows/e2e.yaml.
    for name, docs in rendered.items():
        assert not [d for d in docs if d["apiVersion"].split("/")[0] in PIPELINE_GROUPS], name


def test_crd_schemas_found(crds):
    assert ("argoproj.io/v1alpha1", "Workflow") in crds
    assert ("kubeflow.org/v1", "TFJob") in crds


def test_workflow_matches_the_argo_crd(crds, wf):
    assert wf["apiVersion"] == "argoproj.io/v1alpha1" and wf["kind"] == "Workflow"
    schema = crds[("argoproj.io/v1alpha1", "Workflow")]
    assert openapi.errors(schema, wf) == []
    # And with the parameters filled in as a run sees them.
    assert openapi.errors(schema, workflow.workflow_substituted(wf, workflow.sample_values(wf))) == []


@pytest.mark.parametrize("model", ["cnn", "dropout", "batchnorm"])
@pytest.mark.parametrize("limits", ["default", "gpu"])
def test_embedded_tfjobs_match_the_tfjob_crd(crds, wf, rendered, model, limits):
    overrides = {}
    if limits == "gpu":
        data = next(
            d
            for d in rendered["overlays/local+gpu"]
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fmnist-pipeline"
        )["data"]
        overrides = {"worker-limits": data["worker-limits"], "worker-requests": data["worker-requests"]}
    manifests = workflow.embedded_manifests(wf, workflow.sample_values(wf, overrides, model=model))
    assert manifests, "the workflow creates its TFJobs from resource templates"
    for template, obj in manifests:
        assert obj["apiVersion"] == "kubeflow.org/v1" and obj["kind"] == "TFJob", template
        assert openapi.errors(crds[("kubeflow.org/v1", "TFJob")], obj) == [], template
        # The pod template inside is a core PodTemplateSpec: validate it strictly too.
        pod = obj["spec"]["tfReplicaSpecs"]["Worker"]["template"]
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": pod}, "1.35", strict=True
        )


def test_workflow_containers_are_valid_core_containers(wf, k8s_version):
    values = workflow.sample_values(wf)
    for t in wf["spec"]["templates"]:
        if "container" in t:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": t["name"]},
                "spec": {
                    "containers": [{"name": "main", **workflow.substitute_obj(t["container"], values)}],
                    "volumes": wf["spec"]["volumes"],
                    "securityContext": wf["spec"]["securityContext"],
                },
            }
            kubernetes_validate.validate(pod, k8s_version, strict=True)


def test_the_validators_reject_unknown_fields(crds, wf):
    """The checks above would catch the reference system's `manifests:` typo."""
    broken = copy.deepcopy(wf)
    train = next(t for t in broken["spec"]["templates"] if "resource" in t)
    train["resource"]["manifests"] = train["resource"].pop("manifest")
    assert any("manifests" in e for e in openapi.errors(crds[("argoproj.io/v1alpha1", "Workflow")], broken))
    _, tfjob = workflow.embedded_manifests(wf, workflow.sample_values(wf))[0]
    tfjob["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicyy"] = "Never"
    assert openapi.errors(crds[("kubeflow.org/v1", "TFJob")], tfjob)
