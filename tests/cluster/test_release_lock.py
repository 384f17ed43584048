"""Promote, the canary decision and a rollback never run at the same time on the cluster.

Locally they serialize on an fcntl lock on the work volume (jobs/core/files.py `locked`, the
`.promote.lock` beside the versions). On the cluster that volume is ReadWriteMany storage
shared by nodes, where such locks are not dependable (NFS needs a lock manager, others ignore
them), so every step that changes what is served holds one Argo mutex. Argo v4.1.2 grants a
mutex to one holder at a time, namespaced to the workflow's namespace unless it names another,
in the controller's memory unless `database: true` (`docs/synchronization.md`,
`workflow/sync/` at v4.1.2): one controller per namespace here, so the in-memory lock is the
whole truth. The template-level field is `synchronization.mutexes` (v3.6 and after; the
workflow CRD's schema is checked by test_schemas.py).
"""

from __future__ import annotations

from tests.cluster import workflow

# The jobs that change the served version: a new version, a pin, a decision.
RELEASE_MODULES = {"jobs.promote", "jobs.canary", "jobs.rollback"}


def holders(flow: dict) -> dict[str, list[dict]]:
    """template name -> the mutexes it holds, for every container template."""
    out = {}
    for name, t in workflow.templates(flow).items():
        if "container" in t:
            out[name] = (t.get("synchronization") or {}).get("mutexes", [])
    return out


def module(template: dict) -> str:
    command = template["container"]["command"]
    assert command[:2] == ["python", "-m"], command
    return command[2]


def test_every_release_step_holds_the_one_release_mutex(wf, rollback_wf):
    names = set()
    releasing = []
    for flow in (wf, rollback_wf):
        for name, mutexes in holders(flow).items():
            template = workflow.templates(flow)[name]
            if module(template) in RELEASE_MODULES:
                releasing.append(name)
                assert len(mutexes) == 1, f"{name} holds no release lock"
                [mutex] = mutexes
                assert not mutex.get("database") and not mutex.get("namespace"), "the namespace's own controller"
                names.add(mutex["name"])
            else:
                assert mutexes == [], f"{name} changes nothing served and must not wait for releases"
    assert sorted(releasing) == ["canary", "close-canary", "promote", "rollback"]
    assert len(names) == 1, f"one mutex for all of them, not {names}"


def test_the_semaphore_on_training_is_not_the_release_lock(wf):
    train = workflow.templates(wf)["train"]
    assert "mutexes" not in train["synchronization"] and train["synchronization"]["semaphores"]
