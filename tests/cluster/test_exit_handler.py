"""Whatever ends a workflow, its TFJobs stop training.

Argo v4.1.2 deletes what a resource template created only with the Workflow object (the owner
reference, `setOwnerReference`); stopping a workflow (`argo stop`) or its deadline
(`activeDeadlineSeconds`) ends the train step's pod, not the TFJob, whose workers trained on
for hours. Argo runs `spec.onExit` after the DAG however it ended, with `{{workflow.status}}`
set to Succeeded, Failed or Error (`workflow/controller/exit_handler.go`,
`operator.go` at v4.1.2; `argo terminate` skips it). The exit handler suspends each TFJob of
the run; the operator's response is modelled in tests/cluster/tfjob_model.py (job.go at
v1.9.4): a running job loses its pods, a finished one is left as it is, so a failed worker's
pod stays for its logs.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.cluster import openapi, workflow
from tests.cluster.test_policy import bound_rules
from tests.cluster.tfjob_model import TFJob

STATUSES = ("Succeeded", "Failed", "Error")


def merge_patch(target, patch):
    """RFC 7386, what `kubectl patch --type merge` sends and the API server applies."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def when(expression: str) -> bool:
    """Argo's `when` after substitution: `a != b` or `a == b` of plain words (govaluate)."""
    for op, result in (("!=", lambda a, b: a != b), ("==", lambda a, b: a == b)):
        if op in expression:
            left, right = (side.strip() for side in expression.split(op))
            return result(left, right)
    raise AssertionError(f"unexpected when: {expression}")


def exit_steps(wf: dict, kind: str = "resource") -> list[dict]:
    """The exit handler's steps whose template is a `kind` (resource: the TFJob patches)."""
    handler = workflow.templates(wf)[wf["spec"]["onExit"]]
    return [step for group in handler["steps"] for step in group if kind in workflow.templates(wf)[step["template"]]]


def patches(wf: dict, status: str) -> list[dict]:
    """The patches the exit handler sends when the workflow ended with `status`."""
    values = workflow.sample_values(wf)
    values["workflow.status"] = status
    out = []
    for step in exit_steps(wf):
        if "when" in step and not when(workflow.substitute(step["when"], values)):
            continue
        template = workflow.templates(wf)[step["template"]]
        items = json.loads(json.dumps(values["workflow.parameters.models"].split(",")))
        assert "workflow.parameters.models" in step["withParam"], "one per candidate, as the train step fans out"
        for item in items:
            resource = template["resource"]
            assert (resource["action"], resource.get("mergeStrategy")) == ("patch", "merge")
            text = workflow.substitute(resource["manifest"], {**values, "inputs.parameters.model": item})
            import yaml

            out.append(yaml.safe_load(text))
    return out


def created_tfjob(wf: dict, model: str) -> dict:
    [(_, tfjob)] = workflow.embedded_manifests(wf, workflow.sample_values(wf, model=model))
    return tfjob


def test_every_ending_but_success_suspends_each_tfjob_of_the_run(wf):
    assert wf["spec"].get("onExit"), "no exit handler: a stopped workflow leaves its TFJobs training"
    models = workflow.parameter_defaults(wf)["models"].split(",")
    assert patches(wf, "Succeeded") == [], "after a success every TFJob has finished"
    for status in ("Failed", "Error"):
        sent = patches(wf, status)
        assert [p["metadata"]["name"] for p in sent] == [created_tfjob(wf, m)["metadata"]["name"] for m in models]
        for patch in sent:
            assert (patch["apiVersion"], patch["kind"]) == ("kubeflow.org/v1", "TFJob")
            assert patch["spec"] == {"runPolicy": {"suspend": True}}
            [step] = exit_steps(wf)
            assert step["continueOn"]["failed"] is True, "a TFJob never created is not an error of the run"


def test_the_patched_tfjob_is_valid_and_the_executor_may_patch(wf, crds, overlay):
    tfjob = created_tfjob(wf, "cnn")
    [patch, *_] = patches(wf, "Failed")
    patched = merge_patch(tfjob, patch)
    assert patched["spec"]["runPolicy"]["suspend"] is True
    assert patched["spec"]["tfReplicaSpecs"] == tfjob["spec"]["tfReplicaSpecs"], "nothing else changes"
    assert openapi.errors(crds[("kubeflow.org/v1", "TFJob")], patched) == []
    rules = bound_rules(overlay, wf)
    assert "patch" in rules[("kubeflow.org", "tfjobs")]


def running_job() -> TFJob:
    job = TFJob(replicas=2, restart_policy="ExitCode")
    job.reconcile(1)  # creates the pods
    for i in range(2):
        job.run(i)
    job.reconcile(2)
    assert [c["type"] for c in job.conditions] == ["Created", "Running"] and len(job.pods) == 2
    return job


def test_a_stopped_run_stops_its_workers(wf):
    """`argo stop` (or the deadline) mid-training: the workflow is Failed, the exit handler
    suspends the job, the operator deletes its running workers at its next reconcile."""
    job = running_job()
    [patch, *_] = patches(wf, "Failed")
    job.suspend = patch["spec"]["runPolicy"]["suspend"]
    job.reconcile(3)
    assert job.pods == {}, "no worker keeps training"
    assert job.is_("Suspended") and not job.is_("Running")
    # Without the exit handler (what this project shipped before) the workers train on.
    job = running_job()
    for now in range(3, 100):
        job.reconcile(now)
    assert len(job.pods) == 2 and all(p.phase == "Running" for p in job.pods.values())


def test_a_failed_workers_pod_is_kept_for_its_logs(wf):
    """One candidate failed for good (exit 1: the step failed, then the run), another finished:
    suspending both changes neither, so the failed worker's pod is still there."""
    failed = running_job()
    failed.exit(1, 1)
    failed.reconcile(3)
    failed.reconcile(4)  # cleanPodPolicy Running: the peer still running goes, the failed pod stays
    assert failed.is_("Failed") and list(failed.pods) == [1]
    finished = running_job()
    finished.exit(0, 0)
    finished.exit(1, 0)
    finished.reconcile(3)
    assert finished.is_("Succeeded")
    before = {id(job): copy.deepcopy(job.pods) for job in (failed, finished)}
    for job in (failed, finished):
        job.suspend = True
        job.reconcile(5)
        assert job.pods == before[id(job)] and not job.is_("Suspended")
    assert failed.pods[1].phase == "Failed"


@pytest.mark.parametrize("status", STATUSES)
def test_the_when_expression_is_one_argo_evaluates(wf, status):
    [step] = exit_steps(wf)
    assert step["when"] == "{{workflow.status}} != Succeeded"
    assert when(workflow.substitute(step["when"], {"workflow.status": status})) == (status != "Succeeded")


@pytest.mark.parametrize("status", STATUSES)
def test_a_run_that_did_not_succeed_rolls_back_the_canary_it_opened(wf, status):
    """Smoke failed (the canary step never ran) or the canary step's pod was lost: the canary
    promote opened would stay open, pinned, with every later run refused. The exit handler
    runs `jobs.canary --now rollback --only-own`: only this run's canary, nothing when none is
    open (tests/pipeline/test_release_state.py runs the command from each state)."""
    [step] = exit_steps(wf, "container")
    values = {**workflow.sample_values(wf), "workflow.status": status}
    assert when(workflow.substitute(step["when"], values)) is (status != "Succeeded")
    container = workflow.templates(wf)[step["template"]]["container"]
    args = [workflow.substitute(a, values) for a in container["args"]]
    assert container["command"] == ["python", "-m", "jobs.canary"]
    assert args == ["--work-dir", "/work", "--run-id", values["workflow.name"], "--now", "rollback", "--only-own"]
    from jobs.release import canary

    parsed = canary.build_parser().parse_args(args)
    assert parsed.now == "rollback" and parsed.only_own
