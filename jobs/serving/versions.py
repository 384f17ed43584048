"""The versions of one model on disk: which are served, loading and unloading, retries.

Versions are numeric folders under the model's base path; its version policy chooses the ones to
serve (the latest by default). As TF Serving's AvailabilityPreservingPolicy does
(core/availability_preserving_policy.cc, 2.20.0), a new version is loaded fully (its warm-up
included) before the one it replaces is let go, and a version no longer chosen is unloaded
only once a chosen one is available, or when none is chosen at all (a pin to a version that is
not there unloads the served one, there and here). Requests already running finish on the
version they started with; a version is released when the last of them is done (its state goes
`AVAILABLE` → `UNLOADING` → `END`). A version that fails to load is shown as `END` with its
error in the model status and the log, and never replaces the one being served.

A failed version is tried again, as TF Serving retries a failed load (`--max_num_load_retries`,
`--load_retry_interval_micros`): at once when anything in its folder changes (a version copied
in by hand in several steps becomes whole later), and otherwise up to `retries` more times,
`retry_seconds` apart.
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
from jobs.core.paths import unreadable_versions, versions
from jobs.serving.errors import not_found, without_paths
from jobs.serving.metadata import version_status
from jobs.serving.modelconfig import ModelConfig
from jobs.serving.servable import Servable, error_code

log = logging.getLogger("jobs.serve")

DEFAULT_LOAD_RETRIES = 5  # TF Serving's default
DEFAULT_LOAD_RETRY_SECONDS = 60.0  # TF Serving's default
FINGERPRINT_MAX_ENTRIES = 10_000  # a SavedModel has a handful of files; stop counting past this

Loader = Callable[[Path, int], Servable]


@dataclasses.dataclass(frozen=True)
class Retries:
    """How a version that failed to load is tried again (besides when its files change)."""

    count: int = DEFAULT_LOAD_RETRIES
    seconds: float = DEFAULT_LOAD_RETRY_SECONDS


TF_SERVING_RETRIES = Retries()  # --max_num_load_retries 5, --load_retry_interval_micros 60 s


@dataclasses.dataclass
class VersionState:
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's names)
    error_code: str = "OK"
    error_message: str = ""


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


def _versions_text(versions: list[int]) -> str:
    if not versions:
        return "nothing"
    return f"version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}"


def servable_request(name: str, version: int | None) -> str:
    """How TF Serving names a request for a servable in its messages."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


class ModelVersions:
    """Serves the versions of one model that its policy chooses, polled by `poll_once`."""

    def __init__(self, config: ModelConfig, loader: Loader, retries: Retries = TF_SERVING_RETRIES):
        self.config = config
        self.retries = retries
        self._loader = loader
        self._lock = threading.Lock()
        self._served: dict[int, Servable] = {}
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, Failure] = {}
        self._retired: list[Servable] = []
        self._warned = ""
        self._unreadable = ""  # the unreadable entries last logged: once per change, not per poll

    @property
    def name(self) -> str:
        return self.config.name

    # The request side.

    def acquire(self, version: int | None) -> Servable:
        """The servable for a request (the latest served, or a specific one), held until release."""
        with self._lock:
            chosen = max(self._served, default=None) if version is None else version
            servable = self._served.get(chosen) if chosen is not None else None
            if servable is None:
                raise not_found(f"Servable not found for request: {servable_request(self.name, version)}")
            servable.acquire()
            return servable

    def status(self, version: int | None) -> dict:
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {self.name}")
            chosen = [version]
        else:
            if not states:
                raise not_found(f"Could not find any versions of model {self.name}")
            chosen = sorted(states, reverse=True)
        return {"model_version_status": [version_status(v, **dataclasses.asdict(states[v])) for v in chosen]}

    def served(self) -> list[int]:
        with self._lock:
            return sorted(self._served)

    # The poller side.

    def poll_once(self) -> None:
        self._release_retired()
        base = self.config.base_path
        if not base.is_dir():
            self._warn_once(f"the base path {base} of model {self.name} is not a folder; nothing changes")
            return
        found = versions(base)
        self._say_unreadable(base)
        aspired = self.config.policy.aspired(found)
        if not aspired:
            self._warn_once(
                f"no version of {self.name} under {base} is {self.config.policy.describe()} "
                "(versions are numeric folders)"
            )
        else:
            self._warned = ""
        for version in sorted(aspired - set(self.served()), reverse=True):
            self._maybe_load(version, found[version])
        self._unload_unchosen(aspired)

    def _say_unreadable(self, base: Path) -> None:
        bad = unreadable_versions(base)
        message = "; ".join(f"{base / name} cannot be read ({why})" for name, why in sorted(bad.items()))
        if message and message != self._unreadable:
            log.error("%s: not a version, ignored until it is removed", message)
        self._unreadable = message

    def _warn_once(self, message: str) -> None:
        if message != self._warned:
            log.warning("%s", message)
            self._warned = message

    def _maybe_load(self, version: int, path: Path) -> None:
        try:
            print_ = fingerprint(path)
        except OSError:
            return  # renamed away between the listing and now: next poll
        failure = self._failed.get(version)
        if failure is not None and not self._should_retry(failure, print_):
            return
        self._load(version, path, print_)

    def _should_retry(self, failure: Failure, print_: tuple) -> bool:
        if print_ != failure.fingerprint:
            failure.attempts = 0  # new contents: a fresh series of retries
            return True
        return failure.attempts <= self.retries.count and time.monotonic() >= failure.next_try

    def _load(self, version: int, path: Path, print_: tuple) -> None:
        log.info("loading %s version %d from %s", self.name, version, path)
        with self._lock:
            self._states[version] = VersionState("LOADING")
        started = time.monotonic()
        try:
            servable = self._loader(path, version)
        except Exception as err:  # any failure to load: report it and keep what is served
            self._failed_to_load(version, path, print_, err)
            return
        self._failed.pop(version, None)
        with self._lock:
            self._served[version] = servable
            self._states[version] = VersionState("AVAILABLE")
        log.info("serving %s version %d (loaded in %.1fs)", self.name, version, time.monotonic() - started)

    def _unload_unchosen(self, aspired: set[int]) -> None:
        """TF Serving's availability preserving rule: versions no longer chosen go once a chosen
        one serves, or when none is chosen; else all but the newest of them stay."""
        with self._lock:
            unchosen = sorted(v for v in self._served if v not in aspired)
            if aspired and not any(v in self._served for v in aspired):
                unchosen = unchosen[:-1]
            for version in unchosen:
                self._retired.append(self._served.pop(version))
                self._states[version] = VersionState("UNLOADING")
        for version in unchosen:
            log.info("unloading %s version %d (not %s)", self.name, version, self.config.policy.describe())
        self._release_retired()

    def unload_all(self) -> None:
        self._unload_unchosen(set())

    def release_unused(self) -> None:
        """Lets go of unloaded versions that the last request no longer holds."""
        self._release_retired()

    def _failed_to_load(self, version: int, path: Path, print_: tuple, err: Exception) -> None:
        previous = self._failed.get(version)
        attempts = (previous.attempts + 1) if previous and previous.fingerprint == print_ else 1
        self._failed[version] = Failure(print_, attempts, time.monotonic() + self.retries.seconds)
        reason = tf_errors.reason(err)
        # The status is for clients: no server paths in it; the log keeps them.
        message = f"failed to load version {version}: {without_paths(reason, str(path))}"
        with self._lock:
            self._states[version] = VersionState("END", error_code(err), message)
            serving = sorted(self._served)
        left = self.retries.count - attempts + 1
        again = (
            f"retrying in {self.retries.seconds:g}s ({left} left) or when it changes"
            if left > 0
            else "retrying when it changes"
        )
        log.error(
            "%s version %d failed to load from %s: %s; still serving %s; %s",
            self.name,
            version,
            path,
            reason,
            _versions_text(serving),
            again,
        )

    def _release_retired(self) -> None:
        """Drops unloaded versions once no request holds them any more."""
        with self._lock:
            done = [s for s in self._retired if s.inflight == 0]
            self._retired = [s for s in self._retired if s.inflight > 0]
            for servable in done:
                if servable.version not in self._served:
                    self._states[servable.version] = VersionState("END")
        for servable in done:
            servable.close()
            log.info("released %s version %d", self.name, servable.version)
        if done:
            del servable, done
            gc.collect()
