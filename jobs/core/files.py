"""Writes that readers see whole or not at all (a folder or a JSON file: temp + rename, fsynced),
reading JSON with one line naming what is wrong, and a work dir checked before use."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.core.cli import JobError


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yields a temp dir beside `target`; on success it is renamed to `target` in one step.

    Readers see either no `target` or a complete one. If `target` exists it is replaced: the
    old one is first renamed aside, so the window without a `target` is two renames long.
    On failure the temp dir is removed and `target` is untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from other readers
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Replaces `path` with `text` in one rename (temp file, fsynced): readers see the old file
    or the new one. `mode`: the file's permissions (default: 0o666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, payload: Any) -> None:
    """Writes JSON atomically (temp file + rename)."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise JobError(f"{path} is not valid JSON: {err}") from None


def check_work_dir(path: Path) -> Path:
    """The work dir, created if needed; one line naming what is wrong with it otherwise."""
    resolved = path.expanduser().resolve()
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise JobError(f"work dir {path}: {existing} is a file, not a folder; choose another WORK_DIR")
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JobError(f"cannot create the work dir {path}: {err.strerror or err}") from None
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise JobError(f"work dir {path} is not writable; choose another WORK_DIR")
    return resolved


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock (fcntl) on the lock file `path`, created if absent, held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
