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


def append(work: Work, entry: dict, name: str = MODEL_NAME) -> None:
    """Adds one line to the history; call with the promotion lock held. A line is written in
    one write and fsynced; after a line cut short by a crash it starts on a line of its own,
    so that `read` skips the fragment alone."""
    target = path(work, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def line(version: int, found: dict) -> dict:
    """A version's history line, from its promotion.json `found`: what, who, when, why."""
    kept = {key: found.get(key) for key in ("run_id", "model", "accuracy")}
    if "restored_from" in found:
        return {
            "event": "rollback",
            "version": version,
            "origin": origin(version, found),
            "rollback_of": found.get("rollback_of"),
            "restored_from": found.get("restored_from"),
            **kept,
            "registered_version": found.get("registered_version"),
            "reason": found.get("reason"),
            "by": found.get("actor"),
            "at": found.get("rolled_back_at"),
        }
    return {
        "event": "promote",
        "version": version,
        "origin": version,
        "decision": found.get("decision"),
        **kept,
        "dataset": found.get("dataset"),
        "by": found.get("actor"),
        "at": found.get("promoted_at"),
    }


def catch_up(work: Work, name: str = MODEL_NAME) -> list[int]:
    """Appends the line of every version folder the history lacks, oldest first: the version
    just published, and any whose line an earlier job failed to write. Idempotent: a version
    with its line gets no other. Folders without a promotion.json (copied in by hand) get
    none. Call with the promotion lock held; returns the versions written."""
    have = {found.get("version") for found in read(work, name)}
    written = []
    for version, folder in versions(work.served(name)).items():
        found = record(folder)
        if version not in have and found:
            append(work, line(version, found), name)
            written.append(version)
    return written


def write_published(work: Work, what: str, name: str = MODEL_NAME) -> None:
    """`catch_up` after a publish: when the history cannot be written, one line saying that
    `what` (the version) was published all the same, and that repeating the job is not the
    remedy (a rollback repeated would roll back twice): the next release job writes the line."""
    try:
        catch_up(work, name)
    except OSError as err:
        raise JobError(
            f"{what} was published, but the served history {path(work, name)} could not be written "
            f"({err.strerror or err}): the next promotion or rollback writes its line; do not repeat this one"
        ) from None


def read(work: Work, name: str = MODEL_NAME) -> list[dict]:
    """Every whole line of the history, oldest first (none when there is no history yet). A
    line cut short, or not UTF-8 (a disk's garbage), is skipped alone."""
    try:
        data = path(work, name).read_bytes()
    except OSError:
        return []
    lines = []
    for raw in data.splitlines():
        try:
            found = json.loads(raw.decode())
        except ValueError:  # UnicodeDecodeError is one
            continue
        if isinstance(found, dict):
            lines.append(found)
    return lines


def printable(value) -> str:
    """A recorded value for one line of a terminal: control characters (a newline in a
    REASON) escaped, so that no value can forge a line of its own."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def describe(entry: dict) -> str:
    """One history line for people."""
    shown = {key: printable(value) for key, value in entry.items()}
    when, by = shown.get("at", "?"), shown.get("by")
    who = f" by {by}" if entry.get("by") else ""
    origin_of = f"({shown.get('model')} of run {shown.get('run_id')})"
    if entry.get("event") == "rollback":
        why = f": {shown['reason']}" if entry.get("reason") else ""
        return (
            f"version {shown.get('version')} {when}{who}: rollback from version {shown.get('rollback_of')} "
            f"to version {shown.get('restored_from')}'s model {origin_of}{why}"
        )
    accuracy = entry.get("accuracy")
    score = f", test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
    return (
        f"version {shown.get('version')} {when}{who}: promoted {shown.get('model')} of run {shown.get('run_id')}{score}"
    )
