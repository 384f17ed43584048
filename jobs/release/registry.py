"""The registry brought into line with what is served: the version folders are the truth, and
MLflow converges to them.

A promotion or rollback publishes first and tells MLflow after (tracking is best effort), so a
kill in between, a locked store or a full disk can leave a served version unregistered or an
alias unmoved. Every release job therefore ends with `reconcile`: each promoted version whose
promotion.json names the MLflow run (and LoggedModel) it came from but no registry version is
registered now, a rollback's folder takes its origin's registry version, `champion` points at
what the stable servers serve and `canary` at what the canary servers serve during a canary
(and exists at no other time); a served version MLflow never had leaves the aliases as they
are. What could not be recorded is listed, and the job exits
`BEHIND` (3) with one line: the next release job, or `make canary-end` with nothing open,
catches up once the store answers.
"""

from __future__ import annotations

import logging

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.files import locked, write_json
from jobs.core.paths import MODEL_NAME, Work, version_record
from jobs.release import history
from jobs.release.state import CANARY, CHAMPION, read_canary

log = logging.getLogger("jobs.release")

BEHIND = 3  # the exit status of a release job whose change is served but not all in MLflow


def reconcile(work: Work, tracker, name: str = MODEL_NAME) -> list[str]:
    """Registers what is served and moves the aliases; returns what could not be recorded
    (nothing when MLflow agrees, or when no tracking is configured)."""
    if not tracker.uri:
        return []
    base = work.served(name)
    behind: list[str] = []
    with locked(base / ".promote.lock"):  # promotion.json files are rewritten here
        records = history.records(base)
        for version, found in records.items():
            if history.origin(version, found) == version and not found.get("registered_version"):
                register(work, tracker, version, found, name, behind)
        for version, found in records.items():
            source = records.get(history.origin(version, found), {})
            if source.get("registered_version") and found.get("registered_version") != source["registered_version"]:
                write_json(version_record(base / str(version)), {**found, **registered_part(source)})
                found.update(registered_part(source))
        try:
            canary = read_canary(work)
        except JobError:
            canary = None  # make canary-end deals with it; the aliases follow the pins meanwhile
    # An alias moves only to a known registry version: a served version that MLflow never had
    # (copied in by hand, promoted without tracking) leaves champion where it is.
    stable = serving_config.served_version(work, name, "stable")
    champion = records.get(stable, {}).get("registered_version")
    if champion:
        point(tracker, name, CHAMPION, champion, behind)
    elif stable is not None and trackable(records.get(history.origin(stable, records[stable]), {})):
        behind.append(f"{CHAMPION} on served version {stable}")  # its registration failed above
    on_trial = records.get(canary["canary_version"], {}).get("registered_version") if canary else None
    if on_trial or not canary:
        point(tracker, name, CANARY, on_trial, behind)  # no canary open: the alias goes
    return behind


def registered_part(found: dict) -> dict:
    return {key: found[key] for key in ("registered_model", "registered_version", "model_id") if key in found}


def trackable(found: dict) -> bool:
    """Whether a promotion's record names what MLflow would register it from."""
    return bool(found.get("model_id") or found.get("mlflow_run_id"))


def register(work: Work, tracker, version: int, found: dict, name: str, behind: list[str]) -> None:
    """A promoted version that MLflow lacks, registered from the run (and LoggedModel) its
    record names; one promoted without tracking names neither and stays unregistered."""
    if not trackable(found):
        return
    folder = work.served(name) / str(version)
    tags = {"serving_version": str(version), "serving_path": str(folder.resolve()), "registered_late": "true"}
    tags |= {key: str(found[key]) for key in ("run_id", "model") if found.get(key)}
    source = folder.resolve().as_uri()
    done = tracker.register(name, found.get("model_id"), found.get("mlflow_run_id"), source, None, tags)
    if done is None:
        behind.append(f"register version {version}")
        return
    found.update(registered_model=name, registered_version=done)
    write_json(version_record(folder), found)
    log.info("MLflow caught up: served version %d is registry version %s", version, done)


def point(tracker, name: str, alias: str, version: str | None, behind: list[str]) -> None:
    """`alias` on registry `version`, or on none (removed) when `version` is None."""

    def current() -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(tracker.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:  # no such alias, or no such model yet
            return None

    if not tracker.enabled:
        behind.append(f"{alias} on {version or 'nothing'}")
        return
    now = tracker.call(f"read the alias {alias}", lambda: (current(),))
    if now is None:
        behind.append(f"{alias} on {version or 'nothing'}")
        return
    if now[0] == (str(version) if version else None):
        return
    if version is None:
        client = tracker.client
        done = tracker.call(f"remove {alias}", lambda: client.delete_registered_model_alias(name, alias) or True)
    else:
        client = tracker.client
        done = tracker.call(
            f"point {alias} at {version}", lambda: client.set_registered_model_alias(name, alias, version) or True
        )
    if done is None:
        behind.append(f"{alias} on {version or 'nothing'}")
    else:
        log.info("MLflow caught up: %s is on %s", alias, f"registry version {version}" if version else "no version")


def settle(work: Work, tracker, done: str, name: str = MODEL_NAME) -> None:
    """`reconcile` at the end of a release job: one line and exit BEHIND when MLflow lags."""
    behind = reconcile(work, tracker, name)
    if behind:
        raise lagging(done, behind)


def lagging(done: str, behind: list[str]) -> JobError:
    return JobError(
        f"{done}, but MLflow is behind ({', '.join(behind)}): the next release job, or make canary-end, "
        "records it once the tracking store answers",
        code=BEHIND,
    )
