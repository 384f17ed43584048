"""workflows/rollback.yaml, what `make rollback WHERE=cluster` submits, checked offline like the
pipeline's workflow: valid against Argo's CRD and as a core container, its command jobs.rollback
with flags that the job's own parser takes, the pod of the pipeline's promote step (image,
volume, MLflow, security), and every object it names present in each overlay. Its pod is also
in test_policy's checkov scan and rules (`everything`)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from jobs.release import rollback
from tests.cluster import openapi, workflow
from tests.cluster.test_references import ALSO_APPLIED, OVERLAYS, index, other_problems, pod_problems

# A run's values for the parameters that have no default or that a user sets.
GIVEN = {"to": "2", "reason": "v3 misreads sandals", "actor": "ana@laptop"}


def values(wf: dict) -> dict[str, str]:
    return {**workflow.sample_values(wf), **{f"workflow.parameters.{k}": v for k, v in GIVEN.items()}}


def step(wf: dict) -> dict:
    [template] = [t for t in wf["spec"]["templates"] if "container" in t]
    return template


def test_matches_the_argo_crd_and_is_a_valid_container(crds, rollback_wf, k8s_version):
    schema = crds[("argoproj.io/v1alpha1", "Workflow")]
    assert openapi.errors(schema, rollback_wf) == []
    assert openapi.errors(schema, workflow.workflow_substituted(rollback_wf, values(rollback_wf))) == []
    container = workflow.substitute_obj(step(rollback_wf)["container"], values(rollback_wf))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rollback"},
        "spec": {
            "containers": [{"name": "main", **container}],
            "volumes": rollback_wf["spec"]["volumes"],
            "securityContext": rollback_wf["spec"]["securityContext"],
        },
    }
    kubernetes_validate.validate(pod, k8s_version, strict=True)


def test_runs_jobs_rollback_with_flags_its_parser_takes(rollback_wf):
    container = workflow.substitute_obj(step(rollback_wf)["container"], values(rollback_wf))
    assert container["command"] == ["python", "-m", "jobs.rollback"]
    args = rollback.build_parser().parse_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(args.work_dir) == mounts[workflow.WORK_VOLUME]
    assert (args.to, args.reason, args.actor) == (2, GIVEN["reason"], GIVEN["actor"])
    assert args.url == workflow.parameter_defaults(rollback_wf)["serving-url"]
    assert not args.no_check, "the cluster's rollback checks the server before and after"
    # The default target is the job's own.
    assert workflow.parameter_defaults(rollback_wf)["to"] == rollback.PREVIOUS


def test_the_pod_is_the_promote_steps(rollback_wf, wf):
    """Same image, volume, MLflow and security as promotion (which it stands in for), the size
    of the smoke step (no TensorFlow), and the same server and tracking URLs by default."""
    ours, promote = step(rollback_wf)["container"], workflow.templates(wf)["promote"]["container"]
    for field in ("image", "imagePullPolicy", "env", "securityContext", "volumeMounts"):
        assert ours[field] == promote[field], field
    assert ours["resources"] == workflow.templates(wf)["smoke"]["container"]["resources"]
    for field in ("serviceAccountName", "securityContext", "volumes"):
        assert rollback_wf["spec"][field] == wf["spec"][field], field
    ours_defaults, e2e_defaults = workflow.parameter_defaults(rollback_wf), workflow.parameter_defaults(wf)
    for name in ("serving-url", "mlflow-uri", "image-suffix"):
        assert ours_defaults[name] == e2e_defaults[name], name
    image = next(p for p in rollback_wf["spec"]["arguments"]["parameters"] if p["name"] == "image")
    assert image["valueFrom"]["configMapKeyRef"] == {"name": "fmnist-image", "key": "image"}
    assert ours_defaults["reason"] is None, "a rollback needs a reason: no default"
    assert rollback_wf["metadata"]["generateName"] and "name" not in rollback_wf["metadata"]
    assert rollback_wf["spec"]["podGC"]["strategy"] and rollback_wf["spec"]["ttlStrategy"]
    assert not step(rollback_wf).get("retryStrategy"), "a rollback that ran and failed is not repeated"


@pytest.mark.parametrize("name", OVERLAYS)
def test_what_it_names_exists_in_every_overlay(rendered, rollback_wf, name):
    docs = rendered[name] + [d for extra in ALSO_APPLIED.get(name.split("+")[0], []) for d in rendered[extra]]
    assert pod_problems(docs, rollback_wf, index(docs)) == []
    assert other_problems(docs, rollback_wf, index(docs)) == []


def test_the_makefile_submits_it():
    script = (workflow.ROOT / "hack" / "rollback.sh").read_text()
    assert "argo submit" in script and "workflows/rollback.yaml" in script
    for parameter in ("reason", "actor", "to"):
        assert f'-p "{parameter}=' in script, parameter
