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

MLflow follows when tracking is configured (the served folder is what counts): once the check
has passed, the alias `champion` moves to the restored model's registry version, both registry
versions get tags saying who rolled back what, when and why, and the rollback is a run of its
own in the experiment; then the registry is brought into line with the served folders
(jobs.release.registry: exit 3 when it could not be). A model promoted without tracking can be
rolled back too; the job says MLflow was not updated.

Everything is decided under the promotion lock, from what is served then: the target, the
canary state and the server's check. The server at --url must answer and serve the current
version from this work dir's folder, or report that the current version never loaded (a broken
version is rolled back from); a version published while the rollback waited for the lock makes
it write nothing. After, the new version must become AVAILABLE there and pass the smoke check
(jobs.predict --check) at the restored model's recorded test accuracy less --tolerance. A
failed check leaves the rollback in place, `champion` where it was, and ends with one error
line naming the way out (a plain make rollback). --no-check skips both (no server running).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.core import serving_config
from jobs.core.cli import JobError, emit, fraction, parser, positive_float, track_into_work_dir, version_or
from jobs.core.files import locked
from jobs.core.paths import MODEL_NAME, Work, versions
from jobs.predict import predict
from jobs.predict.client import DEFAULT_URL, Client, ServerError, Unreachable, wait_for_version
from jobs.release import history
from jobs.release.registry import settle
from jobs.release.state import CHAMPION, publish, refuse_during_canary, set_version_tags
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


def publish_rollback(
    work: Work,
    to: int | None,
    reason: str,
    actor: str,
    name: str = MODEL_NAME,
    expect: int | None = None,
    check: Callable[[int], None] | None = None,
    closing_canary: bool = False,
) -> Rollback:
    """Publishes version `to` (None: the one served before the current one) as the next
    version and records it in the history. Everything is decided under the promotion lock,
    from what is served then: the target, `check` (the server's, given the current version)
    and the canary state. `expect`: the version the caller meant to roll back; if another was
    published while this waited for the lock, nothing is written (a rollback never undoes a
    promotion it did not see, and two rollbacks never step back twice). `closing_canary`: the
    canary step's own roll back, which a canary in progress does not refuse."""
    base = work.served(name)
    with locked(base / ".promote.lock"):  # the promotion lock: numbers are never taken twice
        if not closing_canary:
            refuse_during_canary(work, "roll back")
        records = history.records(base)
        current, restored = history.target(records, to)
        if expect is not None and current.version != expect:
            raise JobError(
                f"version {current.version} was published while this rollback of version {expect} waited for "
                "the lock: nothing was rolled back (see make status, then roll back again if still needed)"
            )
        if check is not None:
            check(current.version)
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
        what = f"version {version} (version {restored}'s model, in place of version {current.version})"
        history.write_published(work, what, name)
    log.info(
        "version %d of %s serves version %d's model (%s of run %s) in place of version %d",
        result.version,
        base,
        restored,
        result.model,
        result.run_id,
        current.version,
    )
    return result


def rollback(
    work: Work,
    to: int | None,
    reason: str,
    actor: str,
    tracker=None,
    name: str = MODEL_NAME,
    closing_canary: bool = False,
) -> Rollback:
    """`publish_rollback`, then MLflow told (`track`); returns what was done. No server I/O."""
    result = publish_rollback(work, to, reason, actor, name, closing_canary=closing_canary)
    result.mlflow = track(Tracker() if tracker is None else tracker, result, name)
    return result


def track(tracker, result: Rollback, name: str, move_alias: bool = True) -> str:
    """The registry and a run of the experiment told about the rollback; returns what MLflow
    got: `updated`, `not configured`, `not registered` or `failed`. `move_alias` False (its
    check failed): the tags and the run, `champion` left where it is."""
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
    if not move_alias:
        log.warning("the alias %s is left on the model served before (the check failed)", CHAMPION)
    elif restored is not None:
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
    return sorted(v for v, entry in version_states(client).items() if entry.get("state") == "AVAILABLE")


def version_states(client: Client) -> dict[int, dict]:
    """Each version the server knows of, with its status entry (state, status)."""
    entries = client.status().get("model_version_status") or []
    entries = entries if isinstance(entries, list) else []
    found = {}
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("version", "")).isdigit():
            found[int(entry["version"])] = entry
    return found


def never_loaded(entry: dict | None) -> bool:
    """A version the server tried and failed to load: END with an error, as TF Serving says."""
    if not entry or entry.get("state") != "END":
        return False
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    return status.get("error_code") not in (None, "OK", 0)


METRICS_PATH = "/monitoring/prometheus/metrics"
_LOADED = re.compile(r"^[:\w]*load_attempt_count\{(?P<labels>[^}]*)\}", re.MULTILINE)


def loaded_folders(client: Client, outcome: str = "success") -> list[str] | None:
    """The version folders the server loaded (`outcome` fail: tried to load), from its
    `load_attempt_count{model_path,status}` series (TF Serving exports it per folder with
    --monitoring_config_file, and jobs.serve always); None when it exports no metrics."""
    try:
        with urllib.request.urlopen(client.url + METRICS_PATH, timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    found = []
    for match in _LOADED.finditer(text):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"]))
        if labels.get("status") == outcome and "model_path" in labels:
            found.append(labels["model_path"])
    return found


def check_identity(client: Client, folder: Path, outcome: str = "success") -> None:
    """The server loaded this very folder (`outcome`: success, or fail for a version that
    never loaded), not another work dir's version of the same number: its status names no
    path, its load_attempt_count series does."""
    loaded = loaded_folders(client, outcome)
    if loaded is None:
        log.warning("%s exports no metrics: its version %s is matched by number only", client.url, folder.name)
        return
    ours = os.path.realpath(folder)
    if not any(os.path.realpath(path) == ours for path in loaded):
        theirs = [path for path in loaded if Path(path).name == folder.name]
        raise JobError(
            f"the server at {client.url} loaded version {folder.name} from {theirs[-1] if theirs else 'elsewhere'}, "
            f"not from {folder}: nothing was rolled back (is --url the server of this work dir?)"
        )


def check_before(client: Client, base: Path, current: int) -> None:
    """The server answers and serves the current version from this work dir, or the current
    version never loaded there (a broken version is rolled back from, whatever the server
    serves meanwhile): otherwise nothing is written."""
    try:
        states = version_states(client)
        available = sorted(v for v, entry in states.items() if entry.get("state") == "AVAILABLE")
        if available and available[-1] == current:
            check_identity(client, base / str(current))
            return
        if never_loaded(states.get(current)):
            check_identity(client, base / str(current), "fail")
            why = (states[current].get("status") or {}).get("error_message", "no message")
            log.warning("version %d never loaded on %s (%s): rolling back from it", current, client.url, why)
            return
    except Unreachable as err:
        raise JobError(
            f"{err}: nothing was rolled back (start the server: make serve; "
            "or --no-check to roll back the folders alone)"
        ) from None
    except ServerError as err:
        raise JobError(f"{err}: nothing was rolled back") from None
    raise JobError(
        f"the server at {client.url} serves {', '.join(map(str, available)) or 'no version'}, not version "
        f"{current}, the newest on disk: nothing was rolled back (is --url the server of this work dir?)"
    )


def check_after(client: Client, work: Work, result: Rollback, timeout: float, tolerance: float) -> None:
    """The new version is what the server serves, and it scores what the restored one did."""
    version = result.version
    published = f"version {version} (version {result.restored_from}'s model) was published"
    # MLflow's champion stays on the model served before; a rollback from a version that
    # never loaded needs no flag, so make is the way out.
    out = f"; champion was not moved (to serve version {result.rollback_of}'s model again: make rollback REASON=...)"
    try:
        wait_for_version(client, version, timeout)
        available = served_versions(client)
    except JobError as err:
        raise JobError(f"{published} but the server did not switch to it: {err}{out}") from None
    if not available or available[-1] != version:
        now = available[-1] if available else "no version"
        raise JobError(f"{published} but the server at {client.url} serves version {now}{out}")
    accuracy = result.accuracy
    floor = max(0.0, accuracy - tolerance) if isinstance(accuracy, float) else 0.0
    if not isinstance(accuracy, float):
        log.warning("version %d has no recorded test accuracy: the check only needs answers", result.restored_from)
    argv = ["--url", client.url, "--work-dir", str(work.root), "--check", "--min-accuracy", f"{floor:.4f}"]
    argv += ["--dataset", result.dataset] if result.dataset else []
    try:
        predict.main(argv)
    except JobError as err:
        raise JobError(f"{published} and is served, but its check failed: {err}{out}") from None
    log.info("the server at %s serves version %d and passes the check (at least %.4f)", client.url, version, floor)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        raise JobError(f"--url must start with http:// or https://, got {args.url!r}")
    track_into_work_dir(args)
    work = Work(args.work_dir)
    if not versions(work.served()):
        raise JobError(f"no served versions under {work.served()}: nothing to roll back (promote a model first)")
    refuse_during_canary(work, "roll back")
    to = None if args.to == PREVIOUS else args.to
    current, _ = history.target(history.records(work.served()), to)  # a bad --to fails here, before any wait
    client = Client(args.url, MODEL_NAME)
    check = None if args.no_check else lambda version: check_before(client, work.served(), version)
    result = publish_rollback(work, to, args.reason, args.actor, expect=current.version, check=check)
    emit(
        version=result.version,
        rollback_of=result.rollback_of,
        restored_from=result.restored_from,
        registered_version=result.registered_version or "none",
    )
    tracker = Tracker()
    if not args.no_check:  # MLflow's alias moves only once the server serves the restored model
        try:
            check_after(client, work, result, args.timeout, args.tolerance)
        except JobError:
            track(tracker, result, MODEL_NAME, move_alias=False)
            raise
    result.mlflow = track(tracker, result, MODEL_NAME)
    emit(mlflow=result.mlflow.replace(" ", "_"))
    settle(work, tracker, f"version {result.version} is served")
    return 0
