"""The release state, owned here alone: which version folders exist and how a new one is
published, the canary in progress (`<work>/models/canary.json`), and the registry's aliases.

promote publishes and may start a canary; canary ends it (promote or roll back); rollback
publishes an earlier model again and refuses while a canary is in progress. They all read and
write the state through this module, so none of them imports another to reach it. Which
versions each track of servers is told to serve is the other half of the state, kept with the
config files' format in jobs.core.serving_config.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from jobs.core import serving_config
from jobs.core.cli import JobError
from jobs.core.files import atomic_dir, write_json
from jobs.core.paths import MODEL_NAME, Work, unreadable_versions, version_record, versions

log = logging.getLogger("jobs.release")

# The registry's aliases: `champion` is the version every stable server serves; `canary` the
# version on trial on the canary servers while a canary is in progress.
CHAMPION = "champion"
CANARY = "canary"


def publish(source: Path, base: Path, record: dict) -> int:
    """Copies a SavedModel in as the next version with its promotion.json; call with the
    promotion lock held (`base / ".promote.lock"`). A failed copy (a full disk) publishes
    nothing and says so in one line."""
    # Temp dirs of promotions that were killed mid-copy: with the lock held, none is live.
    for stale in base.glob(".*.tmp-*"):
        log.warning("removing %s, left by an interrupted promotion", stale)
        shutil.rmtree(stale, ignore_errors=True)
    for name, err in unreadable_versions(base).items():
        raise JobError(f"{base / name} is not a version folder that can be read ({err}): remove it, then run again")
    version = max(versions(base), default=0) + 1
    try:
        with atomic_dir(base / str(version)) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            write_json(version_record(tmp), {**record, "version": version})
    except (OSError, shutil.Error) as err:
        # shutil.Error carries (source, target, why) for each file it could not copy.
        why = err.args[0][0][2] if isinstance(err, shutil.Error) and err.args and err.args[0] else err
        why = getattr(why, "strerror", None) or why
        raise JobError(
            f"could not copy {source} in as version {version} of {base} ({why}): nothing was published; "
            "free space there, then run again"
        ) from None
    return version


def read_canary(work: Work) -> dict | None:
    """The canary in progress (`canary.json`), or None; one line naming the file when it is
    not a canary's record, with the way out."""
    target = work.canary_state
    try:
        found = json.loads(target.read_bytes().decode())
    except FileNotFoundError:
        return None
    except OSError as err:
        raise JobError(f"cannot read {target}: {err.strerror or err}") from None
    except ValueError:  # not JSON, or not UTF-8
        found = None
    problem = canary_problem(found)
    if problem:
        raise JobError(
            f"{target} is not a canary's record ({problem}): end the canary with make canary-end, "
            "which reads the servers' pins instead"
        )
    return found


def refuse_during_canary(work: Work, then: str) -> None:
    """While a canary is open its tracks are pinned: ending it comes first."""
    canary = read_canary(work)
    if canary is not None:
        raise JobError(
            f"a canary of version {canary['canary_version']} is in progress ({work.canary_state}): "
            f"end it first with make canary-end (it rolls the canary back), then {then}"
        )


def canary_problem(found) -> str | None:
    if not isinstance(found, dict):
        return "not a JSON object"
    for key in ("stable_version", "canary_version"):
        value = found.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{key} is not a version number"
    return None


def write_canary(work: Work, state: dict) -> None:
    write_json(work.canary_state, state)


def end_canary(work: Work) -> None:
    work.canary_state.unlink(missing_ok=True)


def registered(work: Work, version: int, name: str = MODEL_NAME) -> str | None:
    """A version's registry version, as its promotion.json names it."""
    try:
        found = json.loads(version_record(work.served(name) / str(version)).read_text())
    except (OSError, ValueError):
        return None
    return found.get("registered_version") if isinstance(found, dict) else None


def canary_to_end(work: Work, name: str = MODEL_NAME) -> dict | None:
    """The canary that `jobs.canary --now` ends, whatever state it was left in: canary.json
    when it is whole; else the servers' pins (its record lost, or damaged, by a run killed in
    the window): the stable track pinned below a newer version that no decision served
    everywhere. None when no canary is open."""
    try:
        state = read_canary(work)
    except JobError as err:
        log.warning("%s", err)
        state = None
    if state is not None:
        return state
    on_disk = versions(work.served(name))
    if any(serving_config.damaged(serving_config.track_path(work, t)) for t in serving_config.TRACKS):
        return None  # nothing to read a canary from: lift_pins rewrites the files
    stable = serving_config.pinned(serving_config.track_path(work, "stable"), name) or ()
    canary = serving_config.pinned(serving_config.track_path(work, "canary"), name) or ()
    if len(stable) != 1 or stable[0] not in on_disk or canary == stable:
        return None
    candidates = [v for v in (*canary, max(on_disk)) if v in on_disk and v > stable[0]]
    if not candidates:
        return None
    log.warning(
        "no canary record, but the stable servers are pinned to version %d below version %d: ending that canary",
        stable[0],
        candidates[0],
    )
    return {
        "model": name,
        "stable_version": stable[0],
        "canary_version": candidates[0],
        "run_id": None,
        "registered_version": registered(work, candidates[0], name),
        "stable_registered_version": registered(work, stable[0], name),
    }


def lift_pins(work: Work, name: str = MODEL_NAME) -> bool:
    """No canary open: any pin left behind is lifted (every server serves the newest version)
    and a damaged canary record removed. Returns whether there was anything to clear."""
    tracks = [serving_config.track_path(work, t) for t in serving_config.TRACKS]
    left = [t for t in tracks if serving_config.damaged(t) or serving_config.pinned(t, name)]
    left += [work.canary_state] * work.canary_state.exists()
    if left:
        log.warning("no canary is open; clearing what one left: %s", ", ".join(map(str, left)))
        serving_config.serve_latest(work, name)
        end_canary(work)
    return bool(left)


def set_version_tags(tracker, name: str, version: str, tags: dict[str, str]) -> bool | None:
    """Tags one registry version (one call per version, best effort like all tracking)."""

    def apply() -> bool:
        for key, value in tags.items():
            tracker.client.set_model_version_tag(name, version, key, value)
        return True

    return tracker.call(f"tag {name} version {version}", apply)
