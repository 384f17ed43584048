"""What was served, in order: the served history of a model and where a rollback goes back to.

Every served version folder has an origin, the promotion whose model it holds: a promoted
version is its own origin; a rollback re-publishes the files of an earlier version as the next
version number, and its promotion.json records `restored_from` (the version it copied) and
`origin`. The version folders are the truth: `stack` reads them in number order and keeps the
served history without the versions that were rolled away from, so that the default target of
a rollback, the entry below the top, steps back once per rollback (v1, v2, v3 promoted: v4
serves v2's model, then v5 serves v1's, then there is nothing to go back to). A rollback to a
version that is not on the stack (one rolled away from earlier) puts it on top.

Beside the folders, `<work>/models/<name>.history.jsonl` keeps one JSON line per promotion and
rollback (who, when, why), appended under the promotion lock and fsynced: a log for people
(`make status`), not something a rollback depends on.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
from pathlib import Path

from jobs.core.cli import JobError
from jobs.core.paths import MODEL_NAME, Work, version_record, versions


@dataclasses.dataclass(frozen=True)
class Entry:
    """One served state: the version folder that served it and the origin of its model."""

    version: int
    origin: int


def record(folder: Path) -> dict:
    """A version's promotion.json; {} when it is missing or unreadable (a version copied in by
    hand, or by an older promote): such a version counts as its own promotion."""
    try:
        found = json.loads(version_record(folder).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def origin(version: int, found: dict) -> int:
    value = found.get("origin")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < version else version


def stack(records: dict[int, dict]) -> list[Entry]:
    """The served history without what was rolled away from, oldest first; the last entry is
    what is served now. `records`: each version's promotion.json, by version number."""
    served: list[Entry] = []
    for version in sorted(records):
        entry = Entry(version, origin(version, records[version]))
        if entry.origin == version:
            served.append(entry)
            continue
        # A rollback: back to where that model was last served, else on top of it all.
        below = [i for i, e in enumerate(served) if e.origin == entry.origin]
        if below:
            del served[below[-1] :]
        served.append(entry)
    return served


def records(base: Path) -> dict[int, dict]:
    return {version: record(folder) for version, folder in versions(base).items()}


def target(records: dict[int, dict], to: int | None) -> tuple[Entry, int]:
    """(what is served now, the version to restore): `to`, or by default the version served
    before the current one. One line naming the problem when there is nothing to restore."""
    served = stack(records)
    if not served:
        raise JobError("nothing is served yet: there is no version to roll back from (promote a model first)")
    current = served[-1]
    if to is None:
        if len(served) < 2:
            raise JobError(
                f"nothing to go back to: version {current.version} is the only one left in the served history "
                "(the others were rolled away from); name one with TO=<version>"
            )
        return current, served[-2].version
    if to not in records:
        have = ", ".join(map(str, sorted(records)))
        raise JobError(f"there is no version {to} to roll back to (versions: {have})")
    if to == current.version:
        raise JobError(f"version {to} is the one served now: name an earlier one")
    if origin(to, records[to]) == current.origin:
        raise JobError(
            f"version {to} holds the model that version {current.version} serves now "
            f"(both from version {current.origin}): name another"
        )
    return current, to


def default_actor() -> str:
    """user@host of whoever runs the job (a container may have no user name: its uid)."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def path(work: Work, name: str = MODEL_NAME) -> Path:
    return work.history(name)


def append(work: Work, line: dict, name: str = MODEL_NAME) -> None:
    """Adds one line to the history; call with the promotion lock held. A line is written in
    one write and fsynced; a line cut short by a crash is skipped by `read`."""
    target = path(work, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def promotion_line(version: int, record: dict, decision: str) -> dict:
    """The history line of a promotion: its promotion.json `record`, who and when."""
    kept = {key: record.get(key) for key in ("run_id", "model", "accuracy", "dataset")}
    return {
        "event": "promote",
        "version": version,
        "origin": version,
        "decision": decision,
        **kept,
        "by": default_actor(),
        "at": record.get("promoted_at"),
    }


def read(work: Work, name: str = MODEL_NAME) -> list[dict]:
    """Every whole line of the history, oldest first (none when there is no history yet)."""
    try:
        text = path(work, name).read_text()
    except OSError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            lines.append(found)
    return lines


def describe(line: dict) -> str:
    """One history line for people."""
    when, by = line.get("at", "?"), line.get("by")
    who = f" by {by}" if by else ""
    if line.get("event") == "rollback":
        why = f": {line['reason']}" if line.get("reason") else ""
        return (
            f"version {line.get('version')} {when}{who}: rollback from version {line.get('rollback_of')} "
            f"to version {line.get('restored_from')}'s model ({line.get('model')} of run {line.get('run_id')}){why}"
        )
    accuracy = line.get("accuracy")
    score = f", test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
    return f"version {line.get('version')} {when}{who}: promoted {line.get('model')} of run {line.get('run_id')}{score}"
