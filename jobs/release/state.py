"""The release state, owned here alone: which version folders exist and how a new one is
published, the canary in progress (`<work>/models/canary.json`), and the registry's aliases.

promote publishes and may start a canary; canary ends it (promote or roll back); rollback
publishes an earlier model again and refuses while a canary is in progress. They all read and
write the state through this module, so none of them imports another to reach it. Which
versions each track of servers is told to serve is the other half of the state, kept with the
config files' format in jobs.core.serving_config.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from jobs.core.files import atomic_dir, read_json, write_json
from jobs.core.paths import Work, version_record, versions

log = logging.getLogger("jobs.release")

# The registry's aliases: `champion` is the version every stable server serves; `canary` the
# version on trial on the canary servers while a canary is in progress.
CHAMPION = "champion"
CANARY = "canary"


def publish(source: Path, base: Path, record: dict) -> int:
    """Copies a SavedModel in as the next version with its promotion.json; call with the
    promotion lock held (`base / ".promote.lock"`)."""
    # Temp dirs of promotions that were killed mid-copy: with the lock held, none is live.
    for stale in base.glob(".*.tmp-*"):
        log.warning("removing %s, left by an interrupted promotion", stale)
        shutil.rmtree(stale, ignore_errors=True)
    version = max(versions(base), default=0) + 1
    with atomic_dir(base / str(version)) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        write_json(version_record(tmp), {**record, "version": version})
    return version


def read_canary(work: Work) -> dict | None:
    """The canary in progress, or None."""
    target = work.canary_state
    return read_json(target) if target.exists() else None


def write_canary(work: Work, state: dict) -> None:
    write_json(work.canary_state, state)


def end_canary(work: Work) -> None:
    work.canary_state.unlink(missing_ok=True)


def set_version_tags(tracker, name: str, version: str, tags: dict[str, str]) -> bool | None:
    """Tags one registry version (one call per version, best effort like all tracking)."""

    def apply() -> bool:
        for key, value in tags.items():
            tracker.client.set_model_version_tag(name, version, key, value)
        return True

    return tracker.call(f"tag {name} version {version}", apply)
