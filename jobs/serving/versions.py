"""The versions of one model on disk: which one is served, loading and swapping, retries.

Versions are numeric folders under the model base path; the highest is served. A poller
thread notices a new one, loads it fully (and runs every signature once), then swaps it in;
requests already running finish on the version they started with, and the old one is released
when the last of them is done. A version that fails to load never replaces the one being
served: its failure is shown in the model status and the log.

A failed version is tried again, as TF Serving retries a failed load (`--max_num_load_retries`,
`--load_retry_interval_micros`): at once when anything in its folder changes (a version copied
in by hand in several steps becomes whole later), and otherwise up to `retries` more times,
`retry_seconds` apart.

A version can be pinned (`pins`, read from a model config file at every poll, as TF Serving's
`specific` version policy): then the highest pinned version on disk is served instead, and a
pin to a version that is not there keeps the current one.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobs.core import tf_errors
from jobs.core.paths import versions
from jobs.serving import servable as servables
from jobs.serving.errors import not_found, without_paths
from jobs.serving.servable import Servable

log = logging.getLogger("jobs.serve")

DEFAULT_LOAD_RETRIES = 5  # TF Serving's default
DEFAULT_LOAD_RETRY_SECONDS = 60.0  # TF Serving's default
FINGERPRINT_MAX_ENTRIES = 10_000  # a SavedModel has a handful of files; stop counting past this


@dataclasses.dataclass
class VersionState:
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's names)
    error_code: str = "OK"
    error_message: str = ""

    def as_json(self, version: int) -> dict:
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


@dataclasses.dataclass
class Failure:
    fingerprint: tuple
    attempts: int
    next_try: float


def fingerprint(path: Path) -> tuple:
    """What a folder holds, cheaply: every entry's relative name, size and mtime."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
            if len(entries) >= FINGERPRINT_MAX_ENTRIES:
                return tuple(entries)
    return tuple(entries)


class ModelManager:
    """Serves the highest numeric version under `base`, polling for new ones."""

    def __init__(
        self,
        name: str,
        base: Path,
        poll_seconds: float,
        on_change: Callable[[Servable | None], None] | None = None,
        retries: int = DEFAULT_LOAD_RETRIES,
        retry_seconds: float = DEFAULT_LOAD_RETRY_SECONDS,
        loader: Callable[[Path, int], Servable] = servables.load,
        pins: Callable[[], tuple[int, ...] | None] = lambda: None,
    ):
        self.name = name
        self.base = base
        self.poll_seconds = poll_seconds
        self.retries = retries
        self.retry_seconds = retry_seconds
        self._loader = loader
        self._pins = pins
        self._warned_pins: tuple[int, ...] = ()
        self._on_change = on_change or (lambda servable: None)
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, Failure] = {}
        self._retired: list[Servable] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty = False

    # The request side.

    def acquire(self, version: int | None) -> Servable:
        """The servable for a request (the latest, or a specific version), held until release."""
        with self._lock:
            current = self._current
            if current is None or (version is not None and version != current.version):
                spec = f"Latest({self.name})" if version is None else f"Specific({self.name}, {version})"
                raise not_found(f"Servable not found for request: {spec}")
            current.acquire()
            return current

    def status(self, version: int | None) -> dict:
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {self.name}")
            return {"model_version_status": [states[version].as_json(version)]}
        if not states:
            raise not_found(f"Could not find any versions of model {self.name}")
        return {"model_version_status": [states[v].as_json(v) for v in sorted(states, reverse=True)]}

    @property
    def current(self) -> Servable | None:
        with self._lock:
            return self._current

    # The poller side.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any surprise; say what happened
                log.exception("version poll failed; retrying in %.1fs", self.poll_seconds)
            self._stop.wait(self.poll_seconds)

    def poll_once(self) -> None:
        self._release_retired()
        found = versions(self.base)
        if not found:
            if not self._warned_empty:
                log.warning("no versions of %s under %s yet (waiting for a numeric folder)", self.name, self.base)
                self._warned_empty = True
            return
        self._warned_empty = False
        target = self._target(found)
        if target is None:
            return
        current = self.current
        if current is not None and current.version == target:
            return
        path = found[target]
        try:
            print_ = fingerprint(path)
        except OSError:
            return  # renamed away between the listing and now: next poll
        failure = self._failed.get(target)
        if failure is not None and not self._should_retry(failure, print_):
            return
        self._load(target, path, print_)

    def _target(self, found: dict[int, Path]) -> int | None:
        """The highest version, or the highest pinned one on disk (None: none of the pins is)."""
        pins = self._pins() or ()
        if not pins:
            self._warned_pins = ()
            return max(found)
        present = [v for v in pins if v in found]
        if not present:
            if pins != self._warned_pins:
                log.warning(
                    "pinned version(s) %s of %s not under %s; keeping the current one",
                    pins,
                    self.name,
                    self.base,
                )
                self._warned_pins = pins
            return None
        self._warned_pins = ()
        return max(present)

    def _should_retry(self, failure: Failure, print_: tuple) -> bool:
        if print_ != failure.fingerprint:
            failure.attempts = 0  # new contents: a fresh series of retries
            return True
        return failure.attempts <= self.retries and time.monotonic() >= failure.next_try

    def _load(self, version: int, path: Path, print_: tuple) -> None:
        log.info("loading %s version %d from %s", self.name, version, path)
        with self._lock:
            self._states[version] = VersionState("LOADING")
        started = time.monotonic()
        try:
            servable = self._loader(path, version)
        except Exception as err:  # any failure to load: report it and keep the current one
            self._failed_to_load(version, path, print_, err)
            return
        self._failed.pop(version, None)
        with self._lock:
            old, self._current = self._current, servable
            self._states[version] = VersionState("AVAILABLE")
            if old is not None and old.version != version:
                self._states[old.version] = VersionState("UNLOADING")
            if old is not None:
                self._retired.append(old)
        log.info("serving %s version %d (loaded in %.1fs)", self.name, version, time.monotonic() - started)
        self._on_change(servable)
        self._release_retired()

    def _failed_to_load(self, version: int, path: Path, print_: tuple, err: Exception) -> None:
        previous = self._failed.get(version)
        attempts = (previous.attempts + 1) if previous and previous.fingerprint == print_ else 1
        self._failed[version] = Failure(print_, attempts, time.monotonic() + self.retry_seconds)
        reason = tf_errors.reason(err)
        # The status is for clients: no server paths in it; the log keeps them.
        message = f"failed to load version {version}: {without_paths(reason, str(path))}"
        with self._lock:
            self._states[version] = VersionState("END", servables.error_code(err), message)
            serving = self._current.version if self._current else None
        left = self.retries - attempts + 1
        again = (
            f"retrying in {self.retry_seconds:g}s ({left} left) or when it changes"
            if left > 0
            else "retrying when it changes"
        )
        log.error(
            "%s version %d failed to load from %s: %s; still serving %s; %s",
            self.name,
            version,
            path,
            reason,
            f"version {serving}" if serving is not None else "nothing",
            again,
        )
        self._on_change(None)

    def _release_retired(self) -> None:
        """Drops old versions once no request holds them any more."""
        with self._lock:
            done = [s for s in self._retired if s.inflight == 0]
            self._retired = [s for s in self._retired if s.inflight > 0]
            for servable in done:
                if self._current is None or servable.version != self._current.version:
                    self._states[servable.version] = VersionState("END")
        for servable in done:
            log.info("released %s version %d", self.name, servable.version)
        if done:
            del servable, done
            gc.collect()
