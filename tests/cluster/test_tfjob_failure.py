"""A TFJob that fails for good fails its Argo step within one poll; a killed or evicted worker
is retried and never fails the step.

The operator and Argo cannot run here. Their logic is written down from their source (the
files and lines are in tests/cluster/tfjob_model.py and tests/cluster/conditions.py) and
driven with the workflow's own TFJob settings and success/failure conditions, through the
sequences of pod events a real run produces. Argo is polled after every change the operator
makes, so a condition that could fire on any intermediate status would be caught.

The contract with jobs.train: its own errors (a bad flag, a missing dataset, a bug) exit 1, or
2 for usage errors; a lost peer or aborted collectives exit 203 (in the operator's retryable
range, >= 128); the kernel's SIGKILL (137, OOM), an eviction's SIGTERM (143) and an abort
(134) are >= 128 too.
"""

from __future__ import annotations

import pytest

from tests.cluster import conditions, workflow
from tests.cluster.tfjob_model import TFJob

PERMANENT = {"bad flag (argparse)": 2, "missing dataset / a bug (JobError, traceback)": 1}
TRANSIENT = {
    "SIGKILL / OOM-killed": 137,
    "evicted (SIGTERM)": 143,
    "aborted (SIGABRT)": 134,
    "peer lost (jobs.train)": 203,
}
# What this project shipped before: OnFailure, and a failure condition on the failed count.
OLD = {
    "restart_policy": "OnFailure",
    "success": "status.replicaStatuses.Worker.succeeded = 2",
    "failure": "status.replicaStatuses.Worker.failed > 0",
}


@pytest.fixture(scope="module")
def rendered_train(wf) -> dict:
    """The train template's conditions and TFJob with the workflow's defaults (2 workers)."""
    values = workflow.sample_values(wf)
    train = workflow.templates(wf)["train"]
    [(_, tfjob)] = workflow.embedded_manifests(wf, values)
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    return {
        "success": workflow.substitute(train["resource"]["successCondition"], values),
        "failure": workflow.substitute(train["resource"]["failureCondition"], values),
        "restart_policy": worker["restartPolicy"],
        "replicas": int(worker["replicas"]),
        "backoff_limit": tfjob["spec"]["runPolicy"]["backoffLimit"],
        "active_deadline": tfjob["spec"]["runPolicy"]["activeDeadlineSeconds"],
        "clean_pod_policy": tfjob["spec"]["runPolicy"]["cleanPodPolicy"],
        "container": worker["template"]["spec"]["containers"][0]["name"],
        "template_deadline": train["activeDeadlineSeconds"],
    }


class Run:
    """A TFJob and the Argo step watching it; `poll()` after every change."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.job = TFJob(
            replicas=settings.get("replicas", 2),
            restart_policy=settings["restart_policy"],
            backoff_limit=settings.get("backoff_limit", 3),
            active_deadline=settings.get("active_deadline", 14400),
            clean_pod_policy=settings.get("clean_pod_policy", "Running"),
        )
        self.now = 0
        self.verdicts: list[str] = []
        self.step("created")

    def step(self, _what: str, seconds: int = 1) -> str:
        self.now += seconds
        self.job.reconcile(self.now)
        verdict = conditions.decide(self.job.as_json(), self.settings["success"], self.settings["failure"])
        self.verdicts.append(verdict)
        return verdict

    def start_all(self) -> None:
        for i in range(self.job.replicas):
            self.job.run(i)
        self.step("workers running")

    def exit(self, index: int, code: int) -> str:
        self.job.exit(index, code)
        return self.step(f"worker {index} exited {code}")

    def recreate(self) -> None:
        self.step("operator recreates deleted pods")
        self.start_all()

    @property
    def ended(self) -> str | None:
        return next((v for v in self.verdicts if v != "waiting"), None)


def test_normal_success(rendered_train):
    run = Run(rendered_train)
    run.start_all()
    assert run.exit(0, 0) == "waiting", "AllWorkers: one worker done is not the job done"
    assert run.exit(1, 0) == "succeeded"
    assert run.job.conditions[-1]["type"] == "Succeeded"


@pytest.mark.parametrize("cause, code", TRANSIENT.items(), ids=list(TRANSIENT))
def test_a_killed_worker_is_recreated_and_the_step_waits(rendered_train, cause, code):
    run = Run(rendered_train)
    run.start_all()
    assert run.exit(1, code) == "waiting", f"{cause}: the step must not fail while the operator restarts"
    # The operator deleted the pod and counted it failed in the same pass: failed is 1 now.
    assert run.job.as_json()["status"]["replicaStatuses"]["Worker"].get("failed") == 1
    assert [c["type"] for c in run.job.conditions] == ["Created", "Restarting"]
    # Its peer's collectives abort: jobs.train exits 203, and it is recreated too.
    assert run.exit(0, TRANSIENT["peer lost (jobs.train)"]) == "waiting"
    run.recreate()
    assert run.exit(0, 0) == "waiting"
    assert run.exit(1, 0) == "succeeded"
    assert "failed" not in run.verdicts


@pytest.mark.parametrize("cause, code", PERMANENT.items(), ids=list(PERMANENT))
def test_a_permanent_error_fails_the_step_at_the_next_poll(rendered_train, cause, code):
    run = Run(rendered_train)
    run.start_all()
    assert run.exit(1, code) == "failed", cause
    assert run.job.conditions[-1]["type"] == "Failed"
    # Argo polls every 5 s (RESOURCE_STATE_CHECK_INTERVAL): well within the 2 minutes asked.


def test_a_job_past_its_deadline_fails_the_step(rendered_train):
    run = Run(rendered_train)
    run.start_all()
    # A worker OOM-killed on every attempt: ExitCode restarts never count toward backoffLimit
    # (the pod is new each time), so the TFJob's activeDeadlineSeconds ends it.
    for _ in range(20):
        assert run.exit(1, 137) == "waiting"
        run.exit(0, 203)
        run.recreate()
    assert run.step("deadline", seconds=rendered_train["active_deadline"]) == "failed"
    assert not run.job.pods, "cleanPodPolicy Running: the operator deleted the workers"
    assert rendered_train["active_deadline"] <= rendered_train["template_deadline"]


def test_backoff_exhausted_with_pods_deleted_fails_the_step(rendered_train):
    """The backoff path sets Failed and deletes the pods without recounting them (the counts
    are whatever the previous reconcile wrote): the failed count says nothing there."""
    settings = {**rendered_train, "restart_policy": "OnFailure"}  # the one policy whose restarts count
    run = Run(settings)
    run.start_all()
    for _ in range(settings["backoff_limit"]):
        run.exit(1, 1)
    assert run.job.conditions[-1]["type"] == "Failed" and not run.job.pods
    assert run.ended == "failed"
    assert "failed" not in run.job.as_json()["status"]["replicaStatuses"]["Worker"]


def test_the_old_manifest_waited_for_the_deadline_instead(rendered_train):
    """Regression: OnFailure with `failed > 0` never failed a step whose job had failed."""
    run = Run({**rendered_train, **OLD})
    run.start_all()
    for _ in range(3):
        assert run.exit(1, 1) == "waiting"  # restarted in place; backoff exhausted on the third
    assert run.job.conditions[-1]["type"] == "Failed"
    assert run.ended is None, "the job is Failed and its pods gone, the step still waits"
    # And the new failure condition on the same sequence of events fails it at once.
    assert conditions.decide(run.job.as_json(), rendered_train["success"], rendered_train["failure"]) == "failed"


def test_a_failure_condition_on_the_failed_count_would_fail_a_normal_restart(rendered_train):
    run = Run({**rendered_train, "failure": "status.replicaStatuses.Worker.failed > 0"})
    run.start_all()
    assert run.exit(1, 137) == "failed", "so the workflow must not look at the failed count"


def test_failed_is_never_past_the_fourth_condition(rendered_train):
    """Created first, at most one of Running/Restarting, Suspended if ever suspended, then
    Succeeded or Failed appended last: the failure condition covers indices 0 to 3."""
    for codes in ([1], [137, 203, 1], [143, 203, 137, 203, 2]):
        run = Run(rendered_train)
        run.start_all()
        for code in codes:
            run.exit(1, code)
            if code >= 128:
                run.exit(0, 203)
                run.recreate()
        types = [c["type"] for c in run.job.conditions]
        assert types.index("Failed") <= 3 and len(types) == len(set(types)), types


def test_the_workflow_uses_exactly_these_settings(rendered_train):
    assert rendered_train["restart_policy"] == "ExitCode"
    assert rendered_train["container"] == "tensorflow", "the operator reads the exit code of this container only"
    assert rendered_train["failure"] == ", ".join(f"status.conditions.{i}.type == Failed" for i in range(4))
    assert rendered_train["success"] == "status.replicaStatuses.Worker.succeeded = 2"
    assert rendered_train["clean_pod_policy"] == "Running"
    # Both parse as label selectors (Argo fails the step at once if they do not).
    assert [r.op for r in conditions.parse(rendered_train["failure"])] == ["=="] * 4
    assert conditions.parse(rendered_train["success"]) == [
        conditions.Requirement("status.replicaStatuses.Worker.succeeded", "=", ("2",))
    ]


@pytest.mark.parametrize(
    "selector",
    [
        'status.conditions.#(type=="Failed").status == True',  # a gjson query: not a label key
        "status.conditions.1.type == Failed Now",
        "status.replicaStatuses.Worker.failed > one",
        "status.x == " + "a" * 64,
    ],
)
def test_the_selector_parser_rejects_what_kubernetes_rejects(selector):
    with pytest.raises(conditions.SelectorError):
        conditions.parse(selector)


def test_the_selector_semantics():
    obj = {
        "status": {
            "conditions": [{"type": "Created"}, {"type": "Failed"}],
            "replicaStatuses": {"Worker": {"active": 2}},
        }
    }
    match = lambda s: [r.matches(obj) for r in conditions.parse(s)]  # noqa: E731
    assert match("status.conditions.1.type == Failed") == [True]
    assert match("status.conditions.2.type == Failed") == [False]  # absent: no match
    assert match("status.conditions.2.type != Failed") == [True]  # absent: != matches
    assert match("status.replicaStatuses.Worker.active > 1, status.replicaStatuses.Worker.failed > 0") == [True, False]
    assert match("status.replicaStatuses.Worker.active in (1,2)") == [True]
    assert match("status.replicaStatuses.Worker, !status.completionTime") == [True, True]
    assert (
        conditions.decide(obj, "status.replicaStatuses.Worker.active = 2", "status.conditions.1.type == Failed")
        == "failed"
    )
    assert conditions.decide(obj, "status.replicaStatuses.Worker.active = 2, status.x = y", "") == "waiting"
