"""Child processes supervised as process groups: started in a group of their own with their
output copied to a log (and shown with a prefix), waited for as a group, stopped together
(SIGTERM, then SIGKILL after a grace period); and the free ports and command a local model
server needs. The local runner and the benchmarks start every child through here."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.core import lifecycle
from jobs.core.noise import NOISE
from jobs.core.paths import MODEL_NAME

TAIL_LINES = 25


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on localhost (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class Process:
    """A child in its own process group, its output copied to a log file (and, if `echo`,
    to our stdout with a prefix); the last lines and `name=value` results are kept. It ends
    when we end, however we end (`jobs.lifecycle`)."""

    def __init__(self, argv: list[str], log_path: Path, prefix: str, echo: bool, env: dict[str, str]):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.log_path = log_path
        self.prefix = prefix
        self.echo = echo
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.results: dict[str, str] = {}
        self.last_output = time.monotonic()
        self._showing = threading.Lock()
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **lifecycle.child_env()},
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "a") as out:
            out.write(f"$ {shlex.join(self.argv)}\n")
            for line in self.popen.stdout:
                out.write(line)
                out.flush()
                line = line.rstrip("\n")
                self.tail.append(line)
                self.last_output = time.monotonic()
                match = re.fullmatch(r"([A-Za-z_][\w.]*)=(\S*)", line)
                if match:  # a result for machines: kept in the log and in `results`, not shown
                    self.results[match[1]] = match[2]
                elif not NOISE.search(line):
                    self.show(line)

    def show(self, line: str) -> None:
        """One line on our stdout with the prefix, unless not shown (or no longer: `mute`)."""
        with self._showing:
            if self.echo:
                print(f"{self.prefix} {line}", flush=True)

    def mute(self) -> None:
        """Shows nothing more, not even a line being shown now (the run is stopping); the log
        keeps every line."""
        with self._showing:
            self.echo = False

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self) -> int:
        code = self.popen.wait()
        self._reader.join(timeout=5)
        return code

    def kill(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
        stop([self], grace)

    def ended(self) -> str:
        """How it ended: "exited with N" or "killed by SIGNAME"."""
        code = self.popen.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exited with {code}"

    def reason(self) -> str:
        """Why it ended, in one line: its last `error:` line, else its last meaningful line."""
        lines = [line.strip() for line in self.tail if line.strip() and not NOISE.search(line)]
        errors = [line for line in lines if line.startswith("error:")]
        return (errors or lines or ["(no output)"])[-1][:300]

    def describe_failure(self) -> str:
        lines = "\n".join(f"    {line}" for line in self.tail)
        return f"{self.prefix} {self.ended()}; last lines of {self.log_path}:\n{lines}"


def stop(processes: Sequence[Process], grace: float) -> None:
    """Ends processes and their process groups together: SIGTERM, then SIGKILL after `grace`
    seconds (to every group: what a leader that has exited left behind too); returns when all
    are reaped."""
    alive = [p for p in processes if p.poll() is None]
    lifecycle.signal_groups((p.popen.pid for p in alive), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    lifecycle.signal_groups((p.popen.pid for p in processes), signal.SIGKILL)
    for process in processes:
        process.wait()


def wait_group(
    group: Sequence[Process],
    deadline: float | None = None,
    worst: Callable[[Process], object] | None = None,
    interval: float = 0.2,
) -> Process | None:
    """Waits until every process of the group has exited; returns the first that failed (of
    several seen at once, the one `worst` orders first), or None if all exited 0. Past
    `deadline` (time.monotonic()) it raises TimeoutError, leaving the group running."""
    while True:
        codes = [process.poll() for process in group]
        failed = [process for process, code in zip(group, codes, strict=True) if code not in (None, 0)]
        if failed:
            return min(failed, key=worst) if worst else failed[0]
        if all(code == 0 for code in codes):
            for process in group:
                process.wait()
            return None
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(interval)


def server_argv(
    python: str, model_base_path: Path, port: int, model_name: str = MODEL_NAME, config: Path | None = None
) -> list[str]:
    """The command of a local model server (TF Serving's REST API) on 127.0.0.1:`port`; with
    `config`, the versions that model config file pins are served (jobs.serving_config)."""
    pinned = ["--model-config-file", str(config)] if config is not None else []
    return [
        python,
        "-m",
        "jobs.serve",
        "--model-base-path",
        str(model_base_path),
        "--model-name",
        model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *pinned,
    ]


def say_when_silent(children: Callable[[], Sequence[Process]], seconds: float) -> None:
    """In a daemon thread: says what is running when a shown process has printed nothing for
    `seconds` (saving and uploading a model, starting TensorFlow, loading MLflow)."""

    def watch() -> None:
        noticed: dict[int, float] = {}
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            for child in children():
                quiet_since = max(child.last_output, noticed.get(id(child), 0.0))
                if child.echo and child.popen.returncode is None and now - quiet_since >= seconds:
                    noticed[id(child)] = now
                    silent = now - child.last_output
                    what = "still starting" if not child.tail else "still working"
                    child.show(f"… {what} ({silent:.0f} s since its last line)")

    threading.Thread(target=watch, name="heartbeat", daemon=True).start()
