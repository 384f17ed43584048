"""No job outlives the runner that started it, however the runner ends.

The runner (`jobs.local`) starts every job in its own process group and names itself in
FMNIST_PARENT_PID. A job that finds the variable (every job imports this through `jobs`):

- on Linux asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`), which
  holds even when the runner is SIGKILLed and even while the job is busy in TensorFlow's C++;
- on every system (macOS has no such call) watches its parent from a thread, and when the
  parent is gone kills its own process group: itself and whatever it started.

The variable is removed at once, so that the job's own children do not take the job for the
runner. Linux sends the signal when the *thread* that started the job ends: start jobs from a
thread that outlives them (the runner starts all of them from its main thread). Stopping on a
signal (Ctrl-C, SIGTERM) is the runner's part (`jobs.local.runner.Runner.on_signal`); the helpers for
signalling process groups are below.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable

PARENT_ENV = "FMNIST_PARENT_PID"
WATCH_SECONDS = 0.25
PR_SET_PDEATHSIG = 1


def child_env(parent: int | None = None) -> dict[str, str]:
    """What the runner adds to a child's environment."""
    return {PARENT_ENV: str(parent if parent is not None else os.getpid())}


def follow_parent(kernel: bool = True) -> None:
    """Called by every job at import: end with the runner (see the module's docstring).
    `kernel=False` leaves out the Linux-only request (tests use it to check the portable path)."""
    text = os.environ.pop(PARENT_ENV, "")
    if not text.isdigit():
        return
    parent = int(text)
    if kernel and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the runner died before the request above took effect
        _end_group()
    threading.Thread(target=_watch, args=(parent,), name="follow-parent", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    _end_group()


def _end_group() -> None:
    """SIGKILL our process group if we lead it (the runner made it ours), else only us."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def signal_groups(pgids: Iterable[int], signum: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)
