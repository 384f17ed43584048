"""Every shell command in README.md and docs/*.md works when pasted at the repository root.

Each command is one test, in the order the files show them, in one copy of the repository
(`playground`, where `make local DATASET=synthetic` already ran), through one bash per file as
a reader's terminal. Commands that say "Ctrl-C" are servers: they run in the background (the
reader's other terminal) until the end of their file, then get a Ctrl-C and must stop within a
few seconds. Commands that cannot run here are skipped with the reason (`tests/helpers/docs.py`
decides which): pytest's summary lists them.

What differs from a reader's terminal: the knobs in conftest.PIPELINE_KNOBS (EPOCHS,
INGEST_ARGS, TRAIN_ARGS, MIN_ACCURACY) keep the pipeline small, the commands run in a private network
namespace where there is one (so the documented ports 8501, 5000 and 6006 are free), and
shirt.png, shirt.jpg and boot.jpg, the reader's own images in the docs, are test images.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.docs import Background, Command, NetworkNamespace, Shell, all_commands, strip_comment
from tests.helpers.jobs import PIPELINE_COMMAND, encode

COMMANDS = all_commands(ROOT)


@dataclasses.dataclass(frozen=True)
class EndOfFile:
    """After a file's last command: its servers get a Ctrl-C."""

    file: str

    def __str__(self) -> str:
        return f"{self.file} end: its servers stop on Ctrl-C"


ITEMS: list[Command | EndOfFile] = []
for _command in COMMANDS:
    if ITEMS and _command.file != ITEMS[-1].file:
        ITEMS.append(EndOfFile(ITEMS[-1].file))
    ITEMS.append(_command)
if ITEMS:
    ITEMS.append(EndOfFile(ITEMS[-1].file))
STOP_SECONDS = 15  # a server stops this soon after Ctrl-C
SERVER_START_SECONDS = 240


class Session:
    def __init__(self, root: Path, env: dict[str, str], logs: Path):
        self.root = root
        self.env = env
        self.logs = logs
        self.network = NetworkNamespace()
        self.file: str | None = None
        self.shell: Shell | None = None
        self.servers: list[Background] = []

    def enter(self, command: Command) -> None:
        """A new file is a new reader's session: the previous file's servers are stopped."""
        if command.file != self.file:
            self.end_file()
            self.file = command.file
            self.shell = Shell(self.root, self.env, self.network.prefix)

    def end_file(self) -> list[str]:
        """Ctrl-C to each server of the file; returns the failures (one line each)."""
        servers, self.servers = self.servers, []
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        failures = []
        for server in servers:
            try:
                seconds = server.interrupt(STOP_SECONDS)
                print(
                    f"{server.command.where} `{strip_comment(server.command.text)}`: "
                    f"stopped {seconds:.1f} s after Ctrl-C"
                )
            except TimeoutError as err:
                failures.append(f"{server.command.where} `{server.command.text}`: {err}")
        return failures

    def close(self) -> None:
        try:
            self.end_file()
        finally:
            self.network.close()


@pytest.fixture(scope="module")
def session(playground, tmp_path_factory):
    assert playground.pipeline.returncode == 0, playground.pipeline.stdout[-3000:] + playground.pipeline.stderr[-3000:]
    # A copy of the playground: what these commands change does not reach the other tests.
    root = tmp_path_factory.mktemp("docs") / "fmnist"
    shutil.copytree(playground.root, root, symlinks=True)
    from jobs.core.paths import Work
    from jobs.ingest import data

    test = data.load(Work(root / ".work").dataset("synthetic"), ("test",))["test"]
    (root / "shirt.png").write_bytes(encode(test.images[0], "PNG"))
    (root / "shirt.jpg").write_bytes(encode(test.images[0], "JPEG"))
    (root / "boot.jpg").write_bytes(encode(test.images[1], "JPEG"))
    session = Session(root, playground.env, tmp_path_factory.mktemp("docs-logs"))
    yield session
    session.close()


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ITEMS, ids=str)
def test_documented_command(command: Command | EndOfFile, session: Session, playground):
    if isinstance(command, EndOfFile):
        if session.file != command.file:
            pytest.skip(f"{command.file}: nothing of it ran")
        failures = session.end_file()
        assert not failures, "\n".join(failures)
        return
    reason = command.reason_not_run()
    if reason:
        pytest.skip(f"{command.where} `{strip_comment(command.text)}`: {reason}")
    if strip_comment(command.text) == PIPELINE_COMMAND:
        # Run once for the whole session by the playground fixture, exactly as written.
        proc = playground.pipeline
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return
    session.enter(command)
    if command.background:
        running = [b for b in session.servers if strip_comment(b.command.text) == strip_comment(command.text)]
        if running and running[0].proc.poll() is None:
            pytest.skip(f"{command.where}: already running since {running[0].command.where}, as in a reader's terminal")
        if not session.network.private:
            for port in (8501, 5000, 6006):
                if f":{port}" in command.text and port_in_use(port):
                    pytest.skip(f"{command.where}: port {port} is in use on this machine")
        log = session.logs / f"{command.file.replace('/', '_')}-{command.line}.log"
        server = Background(command, session.root, session.env, session.network.prefix, log)
        session.servers.append(server)
        server.wait_listening(session.network.prefix, SERVER_START_SECONDS)
        return
    code, output = session.shell.run(command.text, timeout=600)
    assert code == 0, f"{command.where} `{command.text}` exited with {code}:\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]


def test_the_docs_have_commands_and_reasons():
    """The extraction finds the quick start, and every command not run says why."""
    texts = [strip_comment(c.text) for c in COMMANDS]
    assert PIPELINE_COMMAND in texts and "make serve" in texts and "make predict" in texts
    assert all(c.reason_not_run() is None or c.reason_not_run().strip() for c in COMMANDS)
    assert any(c.reason_not_run() and "cluster" in c.reason_not_run() for c in COMMANDS)


SAMPLE = """\
Text with `make inline`, which is no command.

```sh
make local DATASET=synthetic   # a comment
make serve                     # on http://127.0.0.1:8501 (Ctrl-C stops it)
# a comment line
curl -s http://x \\
  -d "{\\"a\\": 1}"   # after a continuation
```

```console
$ make predict
output line
$ echo "# not a comment" \\
    more
```

```console
make bench
```

<!-- docs-test: not run: needs a printer -->
```bash
lp report.pdf
```

```
make diagram   # no language: not commands
```
"""


def test_commands_are_read_by_fence_language(tmp_path):
    from tests.helpers.docs import commands

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(SAMPLE)
    found = commands(tmp_path / "docs" / "x.md", tmp_path)
    assert [(c.line, strip_comment(c.text)) for c in found] == [
        (4, "make local DATASET=synthetic"),
        (5, "make serve"),
        (7, 'curl -s http://x \\\n  -d "{\\"a\\": 1}"'),
        (12, "make predict"),
        (14, 'echo "# not a comment" \\\n    more'),
        (19, "make bench"),
        (24, "lp report.pdf"),
    ]
    assert [c.background for c in found] == [False, True, False, False, False, False, False]
    reasons = [c.reason_not_run() for c in found]
    assert reasons[:5] == [None] * 5
    assert "benchmark" in reasons[5] and reasons[6] == "needs a printer"
    assert found[0].file == "docs/x.md" and found[0].where == "docs/x.md:4"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("make local", "downloads"),
        ("make local DATASET=idx", "official Fashion-MNIST files"),
        ("make cluster deploy image pipeline", "cluster"),
        ("kubectl get pods", "cluster"),
        ("make test", "test suite"),
        ("hack/test.sh tests/serving", "test suite"),
        ("python -m jobs.promote --run-id <run>", "template"),
        ("make clean", "deletes the work dir"),
    ],
)
def test_commands_that_cannot_run_here_say_why(text, why):
    assert why in Command("README.md", 1, text, 1).reason_not_run()


def test_the_shell_reports_each_commands_status_and_keeps_variables(tmp_path):
    shell = Shell(tmp_path, {"PATH": os.environ["PATH"]}, [])
    try:
        assert shell.run("false", 10) == (1, "")
        assert shell.run("NAME=world", 10) == (0, "")
        assert shell.run("echo hello $NAME; (exit 7)", 10) == (7, "hello world")
        assert shell.run("echo a \\\n  b   # a comment", 10) == (0, "a b")
    finally:
        shell.close()
