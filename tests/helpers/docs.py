"""The shell commands of README.md and docs/*.md, and a reader's terminal to paste them into.

What counts as a command, by the fence's language:
- `sh`, `bash`, `shell`: every line that is not blank or a comment; a line ending in `\\` goes
  on with the next.
- `console`: the lines after a `$ ` prompt (and their `\\` continuations), the rest being
  output; a `console` block without any prompt is read like `sh`.
Other fences (diagrams, trees, output) hold no commands.

What is not run here, with the reason the test reports, is decided by `NOT_RUN` below (needs a
cluster, a download, ...) or, for a whole block, by an HTML comment on the line before its
fence: `<!-- docs-test: not run: the reason -->`. A command whose line says "Ctrl-C" is a server:
it runs in the background, as in another terminal, until the end of its file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

COMMAND_FENCES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"<!--\s*docs-test:\s*not run:\s*(.+?)\s*-->")

CLUSTER = "needs a Kubernetes cluster (Docker, k3d, kubectl, argo), which this machine has not"
NOT_RUN: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"\b(kubectl|argo|k3d|docker)\b|\bmake\b.*\b(cluster|deploy|image|pipeline|smoke|down)\b"),
        CLUSTER,
    ),
    (re.compile(r"\bSTATUS=cluster\b"), CLUSTER),
    (re.compile(r"\bmake\s+local\b(?!.*\bDATASET=(synthetic|idx)\b)"), "downloads Fashion-MNIST"),
    (re.compile(r"\bDATASET=idx\b"), "needs the four official Fashion-MNIST files in .work/idx"),
    (re.compile(r"\bmake\s+(test|test-fast)\b|\bhack/test\.sh\b"), "runs the test suite, which this test is part of"),
    (
        re.compile(r"\bmake\s+bench\b|\bhack/bench\.sh\b|\bjobs\.bench\b|\bBENCH_ARGS="),
        "a benchmark of minutes; tests/repo/test_bench.py runs its quick mode",
    ),
    (re.compile(r"\bmake\s+(venv|venv-dev|lock)\b"), "installs into the virtualenv, which `make test` has just done"),
    (re.compile(r"\bmake\s+clean\b"), "deletes the work dir that the commands after it use"),
    (re.compile(r"<[a-z][\w -]*>"), "a template: fill in its <...> parts"),
]


@dataclasses.dataclass(frozen=True)
class Command:
    file: str  # relative to the repository root
    line: int
    text: str
    block: int  # the fence's line
    not_run: str | None = None  # the reason, for a block marked not to run

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def background(self) -> bool:
        return "Ctrl-C" in self.text

    def reason_not_run(self) -> str | None:
        if self.not_run:
            return self.not_run
        code = strip_comment(self.text)
        for pattern, reason in NOT_RUN:
            if pattern.search(code):
                return reason
        return None

    def __str__(self) -> str:
        first = self.text.splitlines()[0]
        return f"{self.where} {strip_comment(first)[:60]}"


def strip_comment(text: str) -> str:
    """The command without a trailing `# comment` (outside quotes) on each line."""
    lines = []
    for line in text.splitlines():
        quote = None
        for i, char in enumerate(line):
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#" and (i == 0 or line[i - 1].isspace()):
                line = line[:i]
                break
        lines.append(line.rstrip())
    return "\n".join(lines).strip()


def commands(path: Path, root: Path) -> list[Command]:
    """Every command in the file's command fences, in order."""
    found: list[Command] = []
    lines = path.read_text().splitlines()
    name = str(path.relative_to(root))
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language, start = match[2], match[3].lower(), i
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.search(previous)
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if language in COMMAND_FENCES:
            prompts = language == "console" and any(line.lstrip().startswith("$ ") for _, line in body)
            for number, text in _split(body, console=prompts):
                found.append(Command(name, number, text, start + 1, marker[1] if marker else None))
    return found


def _split(body: list[tuple[int, str]], console: bool) -> list[tuple[int, str]]:
    result: list[tuple[int, str]] = []
    current: list[str] = []
    first = 0
    for number, raw in body:
        line = raw.rstrip()
        if current:  # continuing a command whose last line ended in a backslash
            current.append(line)
        elif console:
            if not line.lstrip().startswith("$ "):
                continue  # output
            first, current = number, [line.lstrip()[2:]]
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first, current = number, [line.strip()]
        if not current[-1].endswith("\\"):
            result.append((first, "\n".join(current)))
            current = []
    if current:
        result.append((first, "\n".join(current)))
    return result


def all_commands(root: Path) -> list[Command]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [command for path in files if path.exists() for command in commands(path, root)]


# --- a reader's terminal -----------------------------------------------------------------


class NetworkNamespace:
    """A private network (its own loopback) for the commands, so that the documented fixed
    ports (8501, 5000, 6006) are free whatever else runs on this machine. Linux with user
    namespaces only; elsewhere `prefix` is empty and the host's ports are used."""

    def __init__(self):
        self.holder: subprocess.Popen | None = None
        self.prefix: list[str] = []
        if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
            return
        holder = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--net", "sh", "-c", "ip link set lo up && exec sleep 86400"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        prefix = ["nsenter", "--preserve-credentials", "--user", "--net", "--target", str(holder.pid)]
        for _ in range(50):
            probe = subprocess.run([*prefix, "true"], capture_output=True)
            up = subprocess.run([*prefix, "cat", "/sys/class/net/lo/operstate"], capture_output=True, text=True)
            if probe.returncode == 0 and up.stdout.strip() in ("unknown", "up"):
                self.holder, self.prefix = holder, prefix
                return
            if holder.poll() is not None:
                break
            time.sleep(0.1)
        holder.kill()
        holder.wait()

    @property
    def private(self) -> bool:
        return bool(self.prefix)

    def close(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()


class Shell:
    """One bash, fed one command at a time like a terminal (variables carry over), each
    command's output and exit status read back."""

    def __init__(self, cwd: Path, env: dict[str, str], prefix: list[str]):
        self.proc = subprocess.Popen(
            [*prefix, "bash", "--norc", "--noprofile"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        token = uuid.uuid4().hex
        # The status first: `$?` after the newline's echo would be the echo's.
        self.proc.stdin.write(f"{{ {command}\n}} </dev/null 2>&1; __status=$?; echo; echo {token} $__status\n")
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise TimeoutError(f"no end after {timeout:.0f} s; output so far:\n{''.join(output)[-3000:]}") from None
            if line is None:
                raise RuntimeError(f"the shell ended; output:\n{''.join(output)[-3000:]}")
            if line.startswith(token):
                return int(line.split()[1]), "".join(output).rstrip("\n")
            output.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Background:
    """A server command, as if run in another terminal: its own process group and output."""

    def __init__(self, command: Command, cwd: Path, env: dict[str, str], prefix: list[str], log: Path):
        self.command = command
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [*prefix, "bash", "--norc", "--noprofile", "-c", command.text],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, prefix: list[str], timeout: float) -> str:
        """Waits until the first http://127.0.0.1:PORT the server prints accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            match = re.search(r"http://127\.0\.0\.1:(\d+)", self.output())
            if match:
                probe = f"exec 3<>/dev/tcp/127.0.0.1/{match[1]}"
                if subprocess.run([*prefix, "bash", "-c", probe], capture_output=True).returncode == 0:
                    time.sleep(1)  # and it is this server that listens: it has not failed meanwhile
                    if self.proc.poll() is None:
                        return match[0]
            time.sleep(0.5)
        raise TimeoutError(f"not listening after {timeout:.0f} s:\n{self.output()[-3000:]}")

    def interrupt(self, timeout: float) -> float:
        """Ctrl-C: SIGINT to its process group; returns the seconds until all of it is gone."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGINT)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None and not group_alive(self.proc.pid):
                return time.monotonic() - started
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        raise TimeoutError(f"still running {timeout:.0f} s after Ctrl-C:\n{self.output()[-2000:]}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
