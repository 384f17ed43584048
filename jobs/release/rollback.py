"""Serve an earlier version again, without deleting anything: a rollback in one command.

    python -m jobs.rollback --work-dir W --reason "v3 misreads sandals"          the version
                                                      served before the current one
    python -m jobs.rollback --work-dir W --to 2 --reason "..." --url http://...   version 2

A rollback re-publishes the files of the version it restores as the next version number, the
way promotion publishes (a hidden temp dir renamed under the promotion lock), so TF Serving's
"highest version" rule and the local server both switch to it without a restart, and every
earlier version folder stays as it was. The new folder's promotion.json says what it is
(`rollback_of`, `restored_from`, `origin`, `reason`, `actor`, `rolled_back_at`) and carries the
restored model's own record (run, model, test accuracy, registry version). Which version the
default goes back to: jobs/release/history.py.

MLflow follows when tracking is configured (as for promotion, it is best effort: the served
folder is what counts): the alias `champion` moves to the restored model's registry version,
both registry versions get tags saying who rolled back what, when and why, and the rollback is
a run of its own in the experiment. A model promoted without tracking can be rolled back too;
the job says MLflow was not updated.

Before anything is written, the server at --url must answer and serve the current version;
after, the new version must become AVAILABLE there and pass the smoke check (jobs.predict
--check) at the restored model's recorded test accuracy less --tolerance. A failed check leaves
the rollback in place and ends with one error line. --no-check skips both (no server running).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from jobs.core import serving_config
from jobs.core.cli import JobError, emit, fraction, parser, positive_float, track_into_work_dir, version_or
from jobs.core.files import locked
from jobs.core.paths import MODEL_NAME, Work, versions
from jobs.predict import predict
from jobs.predict.client import DEFAULT_URL, Client, ServerError, Unreachable, wait_for_version
from jobs.release import history
from jobs.release.state import CHAMPION, publish, read_canary, set_version_tags
from jobs.tracking.tracker import Tracker

log = logging.getLogger("jobs.rollback")

PREVIOUS = "previous"
# What a rollback's promotion.json carries over from the record of the version it restores.
CARRIED = (
    "run_id",
    "model",
    "accuracy",
    "dataset",
    "promoted_at",
    "mlflow_run_id",
    "registered_model",
    "registered_version",
    "model_id",
)
DEFAULT_TOLERANCE = 0.05  # 1,000 test images: about five standard errors at 90% accuracy


@dataclasses.dataclass
class Rollback:
    """What a rollback did: the restored version's record as the new version carries it (its
    promotion.json), the new version, and what MLflow got."""

    run_id: str | None
    model: str | None
    accuracy: float | None
    dataset: str | None
    promoted_at: str | None
    mlflow_run_id: str | None
    registered_model: str | None
    registered_version: str | None  # the restored model's registry version
    model_id: str | None
    origin: int  # the promotion whose model it holds
    restored_from: int
    rollback_of: int  # the version served before
    reason: str
    actor: str
    rolled_back_at: str
    version: int  # the new version, serving the restored model
    replaced_registered_version: str | None
    mlflow: str = "not configured"  # updated, not configured, not registered or failed
    rollback_run_id: str | None = None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rollback(work: Work, to: int | None, reason: str, actor: str, tracker=None, name: str = MODEL_NAME) -> Rollback:
    """Publishes version `to` (None: the one served before the current one) as the next
    version, records it in the history and MLflow; returns what was done. No server I/O."""
    base = work.served(name)
    with locked(base / ".promote.lock"):  # the promotion lock: numbers are never taken twice
        records = history.records(base)
        current, restored = history.target(records, to)
        source = records[restored]
        record = {key: source.get(key) for key in CARRIED}  # the new version's promotion.json
        record |= {
            "origin": history.origin(restored, source),
            "restored_from": restored,
            "rollback_of": current.version,
            "reason": reason,
            "actor": actor,
            "rolled_back_at": utc_now(),
        }
        version = publish(versions(base)[restored], base, record)
        serving_config.serve_latest(work, name)
        replaced = records[current.version].get("registered_version")
        result = Rollback(**record, version=version, replaced_registered_version=replaced)
        history.append(
            work,
            {
                "event": "rollback",
                "version": result.version,
                "origin": result.origin,
                "rollback_of": current.version,
                "restored_from": restored,
                "run_id": result.run_id,
                "model": result.model,
                "accuracy": result.accuracy,
                "registered_version": result.registered_version,
                "reason": reason,
                "by": actor,
                "at": result.rolled_back_at,
            },
            name,
        )
    log.info(
        "version %d of %s serves version %d's model (%s of run %s) in place of version %d",
        result.version,
        base,
        restored,
        result.model,
        result.run_id,
        current.version,
    )
    if tracker is None:
        tracker = Tracker()
    result.mlflow = track(tracker, result, name)
    return result


def track(tracker, result: Rollback, name: str) -> str:
    """The registry and a run of the experiment told about the rollback; returns what MLflow
    got: `updated`, `not configured`, `not registered` or `failed`."""
    if not tracker.enabled:
        log.warning("MLflow was not updated (no tracking configured): the alias %s is unchanged", CHAMPION)
        return "not configured"
    restored, replaced = result.registered_version, result.replaced_registered_version
    if restored is None and replaced is None:
        log.warning("MLflow was not updated: neither version was registered (promoted without tracking)")
        return "not registered"
    version, when, actor, reason = str(result.version), result.rolled_back_at, result.actor, result.reason
    done = []
    if replaced is not None:
        tags = {
            "rolled_back": "true",
            "rolled_back_at": when,
            "rolled_back_by": actor,
            "rolled_back_reason": reason,
            "rolled_back_in_serving_version": version,
        }
        done.append(set_version_tags(tracker, name, str(replaced), tags))
    if restored is not None:
        tags = {
            "restored_by_rollback": "true",
            "restored_at": when,
            "restored_by": actor,
            "restored_reason": reason,
            "restored_from_serving_version": str(result.restored_from),
            "serving_version": version,
        }
        done.append(set_version_tags(tracker, name, str(restored), tags))
        done.append(
            tracker.call(
                f"point {CHAMPION} at version {restored}",
                lambda: tracker.client.set_registered_model_alias(name, CHAMPION, str(restored)) or True,
            )
        )
    else:
        log.warning("version %d's model was never registered: the alias %s is removed", result.restored_from, CHAMPION)
        done.append(
            tracker.call(
                f"remove {CHAMPION}", lambda: tracker.client.delete_registered_model_alias(name, CHAMPION) or True
            )
        )
    result.rollback_run_id = record_run(tracker, result)
    done.append(result.rollback_run_id)
    if tracker.enabled and all(done):
        log.info("MLflow: %s@%s is registry version %s; the rollback is run %s", name, CHAMPION, restored, done[-1])
        return "updated"
    log.warning("MLflow was not fully updated (see the warnings above)")
    return "failed"


def record_run(tracker, result: Rollback) -> str | None:
    """The rollback as a finished run of the experiment (the UI's run list shows it)."""
    restored = result.registered_version
    note = (
        f"Rollback by {result.actor} at {result.rolled_back_at}: served version {result.version} "
        f"holds version {result.restored_from}'s model ({result.model} of run {result.run_id}, "
        f"registry version {restored}) in place of version {result.rollback_of} "
        f"(registry version {result.replaced_registered_version}). Reason: {result.reason}"
    )
    tags = {
        "role": "rollback",
        "mlflow.user": result.actor,
        "mlflow.note.content": note,
        "reason": result.reason,
        "rollback_of": str(result.rollback_of),
        "restored_from": str(result.restored_from),
        "origin": str(result.origin),
        "serving_version": str(result.version),
        "registered_version": str(restored),
        "replaced_registered_version": str(result.replaced_registered_version),
    }
    run_id = tracker.start_run(f"rollback-{result.version}", tags)
    tracker.log_metrics(run_id, {"served_version": result.version, "restored_from": result.restored_from})
    tracker.end_run(run_id)
    return run_id


def reason_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: say why (it is recorded with the rollback)")
    return text.strip()


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, required=True, help="the shared volume (<work-dir>/models/fmnist)")
    p.add_argument(
        "--to",
        type=version_or(PREVIOUS, minimum=1),
        default=PREVIOUS,
        help="the version to serve again (previous: the one served before the current one)",
    )
    p.add_argument("--reason", type=reason_arg, required=True, help="why: recorded in the version, history and MLflow")
    p.add_argument("--actor", default=history.default_actor(), help="who rolls back (recorded)")
    p.add_argument("--url", default=DEFAULT_URL, help="the model server that must switch to the restored version")
    p.add_argument("--no-check", action="store_true", help="neither ask the server first nor check it after")
    p.add_argument("--timeout", type=positive_float, default=300.0, help="how long the new version may take to load")
    p.add_argument(
        "--tolerance",
        type=fraction,
        default=DEFAULT_TOLERANCE,
        help="the check passes at the restored model's recorded test accuracy less this",
    )
    return p


def served_versions(client: Client) -> list[int]:
    entries = client.status().get("model_version_status") or []
    entries = entries if isinstance(entries, list) else []
    return sorted(int(e["version"]) for e in entries if isinstance(e, dict) and e.get("state") == "AVAILABLE")


def check_before(client: Client, current: int) -> None:
    """The server answers and serves the current version: otherwise nothing is written."""
    try:
        available = served_versions(client)
    except Unreachable as err:
        raise JobError(
            f"{err}: nothing was rolled back (start the server: make serve; "
            "or --no-check to roll back the folders alone)"
        ) from None
    except ServerError as err:
        raise JobError(f"{err}: nothing was rolled back") from None
    if not available or available[-1] != current:
        raise JobError(
            f"the server at {client.url} serves {', '.join(map(str, available)) or 'no version'}, not version "
            f"{current}, the newest on disk: nothing was rolled back (is --url the server of this work dir?)"
        )


def check_after(client: Client, work: Work, result: Rollback, timeout: float, tolerance: float) -> None:
    """The new version is what the server serves, and it scores what the restored one did."""
    version = result.version
    published = f"version {version} (version {result.restored_from}'s model) was published"
    try:
        wait_for_version(client, version, timeout)
        available = served_versions(client)
    except JobError as err:
        raise JobError(f"{published} but the server did not switch to it: {err}") from None
    if not available or available[-1] != version:
        now = available[-1] if available else "no version"
        raise JobError(f"{published} but the server at {client.url} serves version {now}")
    accuracy = result.accuracy
    floor = max(0.0, accuracy - tolerance) if isinstance(accuracy, float) else 0.0
    if not isinstance(accuracy, float):
        log.warning("version %d has no recorded test accuracy: the check only needs answers", result.restored_from)
    argv = ["--url", client.url, "--work-dir", str(work.root), "--check", "--min-accuracy", f"{floor:.4f}"]
    argv += ["--dataset", result.dataset] if result.dataset else []
    try:
        predict.main(argv)
    except JobError as err:
        raise JobError(f"{published} and is served, but its check failed: {err}") from None
    log.info("the server at %s serves version %d and passes the check (at least %.4f)", client.url, version, floor)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        raise JobError(f"--url must start with http:// or https://, got {args.url!r}")
    track_into_work_dir(args)
    work = Work(args.work_dir)
    if not versions(work.served()):
        raise JobError(f"no served versions under {work.served()}: nothing to roll back (promote a model first)")
    canary = read_canary(work)
    if canary is not None:  # its stable and canary servers are pinned: the canary step decides first
        raise JobError(
            f"a canary of version {canary.get('canary_version')} is in progress ({work.canary_state}): end it first "
            "with python -m jobs.canary --now rollback (or promote), then roll back"
        )
    to = None if args.to == PREVIOUS else args.to
    current, _ = history.target(history.records(work.served()), to)  # a bad --to fails here, before any I/O
    client = Client(args.url, MODEL_NAME)
    if not args.no_check:
        check_before(client, current.version)
    result = rollback(work, to, args.reason, args.actor)
    emit(
        version=result.version,
        rollback_of=result.rollback_of,
        restored_from=result.restored_from,
        registered_version=result.registered_version or "none",
        mlflow=result.mlflow.replace(" ", "_"),
    )
    if not args.no_check:
        check_after(client, work, result, args.timeout, args.tolerance)
    return 0
