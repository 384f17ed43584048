"""Run the whole pipeline on this machine: the cluster's steps, with local processes.

Each step of `jobs.steps` runs as the same module with the same flags as in the Argo workflow.
A training step runs WORKERS local processes, each given TF_CONFIG on free localhost ports the
way the training operator builds it. Like a TFJob with `restartPolicy: ExitCode`, a worker that
exits 1-127 (its own error) fails the training at once with its log tail, and one that exits
128-255 (a lost peer: `jobs.train` exits 203) or is killed by a signal restarts the group, at
most --max-restarts times; training resumes from its backup.
The serving steps run against a local server on a free port. At the end: a summary table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs import distributed, lifecycle, models, steps, tracking, train
from jobs.common import (
    JobError,
    available_memory,
    cpu_count,
    csv_list,
    duration,
    fraction,
    non_negative_int,
    parser,
    path_arg,
    plain_name,
    positive_int,
    read_json,
    run,
    write_json,
)
from jobs.paths import MODEL_NAME, Work

log = logging.getLogger("jobs.local")

# Lines from TensorFlow's start-up that say nothing useful on a CPU-only machine.
NOISE = re.compile(
    r"cuInit|cuda_platform|Sharding callback duration|oneDNN custom operations|"
    r"rebuild TensorFlow with the appropriate compiler flags|unsupported characters which will be renamed"
)
TAIL_LINES = 25
STOP_GRACE_SECONDS = 3.0  # from SIGTERM to SIGKILL when the run is stopped
SILENT_SECONDS = 20.0  # a shown process silent this long gets a "still working" line
RESULTS_FILE = "results.txt"  # name=value lines for scripts, in the run's folder
# One training worker's memory: 0.75-0.9 GiB resident measured here (TF 2.20, tf-keras, two
# MWMS workers, synthetic and Fashion-MNIST sizes), rounded up.
WORKER_MEMORY_MIB = 1024


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
                elif self.echo and not NOISE.search(line):
                    print(f"{self.prefix} {line}", flush=True)

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self) -> int:
        code = self.popen.wait()
        self._reader.join(timeout=5)
        return code

    def kill(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.wait()

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


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclasses.dataclass
class Settings:
    work: Work
    run_id: str
    dataset: str
    epochs: int
    workers: int
    models: list[str]
    min_accuracy: float
    max_restarts: int
    python: str
    extra: dict[str, list[str]]
    create_store: bool = False  # create the local MLflow store first (no MLFLOW_TRACKING_URI given)


class Runner:
    def __init__(self, settings: Settings):
        self.s = settings
        self.children: list[Process] = []
        self.timings: dict[str, float] = {}
        self.results: dict[str, dict[str, str]] = {}
        self.restarts: dict[str, list[dict[str, str]]] = {}  # per candidate: how each attempt ended
        self.url = ""
        self.stop_requested: float | None = None  # when the first stop signal came
        self._spawning = False
        self._deferred: int | None = None

    # -- processes ------------------------------------------------------------------------

    def params(self, **overrides: str) -> dict[str, str]:
        return {
            "work_dir": str(self.s.work.root),
            "run_id": self.s.run_id,
            "dataset": self.s.dataset,
            "epochs": str(self.s.epochs),
            "model": "",
            "models": ",".join(self.s.models),
            "url": self.url,
            "min_accuracy": str(self.s.min_accuracy),
            **overrides,
        }

    def command(self, step: steps.Step, **overrides: str) -> list[str]:
        return step.command(self.s.python, **self.params(**overrides)) + self.s.extra.get(step.name, [])

    def spawn(self, argv: list[str], log_name: str, prefix: str, echo: bool = True, **env: str) -> Process:
        # A stop signal that comes while a child is being started waits until it is on our list.
        self._spawning = True
        try:
            process = Process(
                argv, self.s.work.run(self.s.run_id) / "logs" / log_name, prefix, echo, {**os.environ, **env}
            )
            self.children.append(process)
        finally:
            self._spawning = False
        if self._deferred is not None:
            raise Stopped(self._deferred)
        return process

    def on_signal(self, signum: int, _frame) -> None:
        """The first Ctrl-C (or SIGTERM, SIGHUP) stops the run: the main thread leaves what it
        is doing and `stop_all` ends every child. Another one kills every child at once."""
        if self.stop_requested is not None:
            print("killing every process of this run now", file=sys.stderr, flush=True)
            self.kill_now()
            return
        self.stop_requested = time.monotonic()
        print(
            f"stopping… ({signal.Signals(signum).name}; every process of this run ends within "
            f"{STOP_GRACE_SECONDS:g} s, or at once on another Ctrl-C)",
            file=sys.stderr,
            flush=True,
        )
        if self._spawning:
            self._deferred = signum
            return
        raise Stopped(signum)

    def kill_now(self) -> None:
        # returncode, not poll(): this may run in a signal handler that interrupted a poll().
        lifecycle.signal_groups((c.popen.pid for c in self.children if c.popen.returncode is None), signal.SIGKILL)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ends every child; from here on a signal kills at once."""
        if self.stop_requested is None:
            self.stop_requested = time.monotonic()
        self.stop(list(self.children), grace)

    def stop(self, processes: list[Process], grace: float = STOP_GRACE_SECONDS) -> None:
        """Ends processes and their process groups together: SIGTERM, then SIGKILL after
        `grace` seconds; returns when all are reaped and off the list of children."""
        alive = [p for p in processes if p.poll() is None]
        lifecycle.signal_groups((p.popen.pid for p in alive), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        lifecycle.signal_groups((p.popen.pid for p in alive if p.poll() is None), signal.SIGKILL)
        for process in processes:
            process.wait()
            if process in self.children:
                self.children.remove(process)

    # -- steps ----------------------------------------------------------------------------

    def run_single(self, step: steps.Step) -> dict[str, str]:
        process = self.spawn(self.command(step), f"{step.name}.log", f"[{step.name}]", FMNIST_THREADS=str(cpu_count()))
        if process.wait() != 0:
            raise JobError(f"step {step.name} failed\n{process.describe_failure()}")
        self.children.remove(process)
        return process.results

    def run_workers(self, step: steps.Step, model: str) -> dict[str, str]:
        """One training job: WORKERS processes, restarted together, like a TFJob with
        restartPolicy ExitCode, when one is killed or exits 128-255 (a TFJob recreates only that
        pod; its peers then exit 203 within the heartbeat timeout and are recreated in turn).
        Each restart is recorded in the candidate's run.json, where the chief reports it to MLflow."""
        # Each worker gives up by itself after as many starts as the runner would allow.
        attempts = ["--max-attempts", str(self.s.max_restarts + 1)]
        argv = step.command(self.s.python, **self.params(model=model)) + attempts + self.s.extra.get(step.name, [])
        threads = str(max(1, cpu_count() // self.s.workers))
        candidate = self.s.work.candidate(self.s.run_id, model)
        self.restarts[model] = []
        while True:
            addresses = [f"localhost:{port}" for port in free_ports(self.s.workers)]
            group = []
            for index in range(self.s.workers):
                env = {"FMNIST_THREADS": threads}
                if self.s.workers > 1:  # the operator injects TF_CONFIG only for several replicas
                    env["TF_CONFIG"] = distributed.tf_config(addresses, index)
                group.append(
                    self.spawn(argv, f"{model}-worker-{index}.log", f"[{model}:{index}]", echo=index == 0, **env)
                )
            failed = self._supervise(group)
            if failed is None:
                return group[0].results
            for process in group:
                process.kill()
                self.children.remove(process)
            restarts = len(self.restarts[model])
            ended = f"worker-{group.index(failed)} {failed.ended()}"
            if not distributed.retryable(failed.popen.returncode):
                raise JobError(
                    f"training {model} failed: {ended}, a permanent error (not restarted)\n{failed.describe_failure()}"
                )
            if restarts >= self.s.max_restarts:
                raise JobError(f"training {model} failed after {restarts} restart(s)\n{failed.describe_failure()}")
            restart = {"ended": ended, "reason": failed.reason()}
            self.restarts[model].append(restart)
            train.record_restart(candidate, restart)
            log.warning(
                "%s: %s (%s); restarting the group (%d/%d)",
                model,
                ended,
                restart["reason"],
                restarts + 1,
                self.s.max_restarts,
            )

    @staticmethod
    def _supervise(group: list[Process]) -> Process | None:
        """Waits for the group; returns the worker that failed first (one that failed for good,
        if several are seen at once), or None if all succeeded."""
        while True:
            codes = [process.poll() for process in group]
            failed = [process for process, code in zip(group, codes, strict=True) if code not in (None, 0)]
            if failed:
                return min(failed, key=lambda process: distributed.retryable(process.popen.returncode))
            if all(code == 0 for code in codes):
                for process in group:
                    process.wait()
                return None
            time.sleep(0.2)

    @contextlib.contextmanager
    def server(self) -> Iterator[None]:
        """The local model server (TF Serving's REST API) on a free port, for the serving steps."""
        port = free_ports(1)[0]
        argv = [
            self.s.python,
            "-m",
            "jobs.serve",
            "--model-base-path",
            str(self.s.work.served()),
            "--model-name",
            MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        process = self.spawn(argv, "serve.log", "[serve]", echo=False)
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield
        finally:
            self.stop([process])

    def timed(self, name: str, fn, *args):
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.monotonic() - started

    def run(self) -> None:
        store = self.spawn_store() if self.s.create_store else None
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        serving = contextlib.ExitStack()
        with serving:
            for number, step in enumerate(steps.STEPS, 1):
                log.info("step %d/%d: %s", number, len(steps.STEPS), step.name)
                if step.per_model:
                    if store is not None:
                        self.finish(store, "creating the MLflow store")
                        store = None
                    for model in self.s.models:
                        workers = f"{self.s.workers} workers" if self.s.workers > 1 else "1 process"
                        log.info(
                            "%s %s: %s, %d epochs (log: %s)",
                            step.name,
                            model,
                            workers,
                            self.s.epochs,
                            self.log_dir() / f"{model}-worker-0.log",
                        )
                        self.results[f"{step.name}:{model}"] = self.timed(
                            f"{step.name}:{model}", self.run_workers, step, model
                        )
                    continue
                ahead = steps.STEPS[number - 1 :]
                if (
                    not self.url
                    and not any(later.per_model for later in ahead)
                    and any("url" in later.parameters() for later in ahead)
                ):
                    # Started early: it loads TensorFlow while the steps before the serving checks run.
                    log.info("starting a model server for the serving checks (it serves what promote writes)")
                    self.s.work.served().mkdir(parents=True, exist_ok=True)
                    serving.enter_context(self.server())
                self.results[step.name] = self.timed(step.name, self.run_single, step)

    def log_dir(self) -> Path:
        return self.s.work.run(self.s.run_id) / "logs"

    def spawn_store(self) -> Process:
        """Creates the local MLflow store in a child, beside ingest: MLflow takes seconds to
        load, and the runner itself never loads it."""
        argv = [self.s.python, "-m", "jobs.tracking", "--work-dir", str(self.s.work.root)]
        return self.spawn(argv, "tracking.log", "[mlflow]")

    def finish(self, process: Process, what: str) -> None:
        if process.wait() != 0:
            raise JobError(f"{what} failed\n{process.describe_failure()}")
        self.children.remove(process)

    def _heartbeat(self) -> None:
        """Says what is running when a shown process has printed nothing for a while (saving
        and uploading a model, starting TensorFlow, loading MLflow)."""
        noticed: dict[int, float] = {}
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            for child in list(self.children):
                quiet_since = max(child.last_output, noticed.get(id(child), 0.0))
                if child.echo and child.popen.returncode is None and now - quiet_since >= SILENT_SECONDS:
                    noticed[id(child)] = now
                    silent = now - child.last_output
                    what = "still starting" if not child.tail else "still working"
                    print(f"{child.prefix} … {what} ({silent:.0f} s since its last line)", flush=True)

    # -- report ---------------------------------------------------------------------------

    def restart_lines(self) -> list[str]:
        """One line per restart of a training job: which worker ended how, and why."""
        return [
            f"restart {i} of {model}: {r['ended']}: {r['reason']}"
            for model, restarts in self.restarts.items()
            for i, r in enumerate(restarts, 1)
        ]

    def results_for_machines(self, wall: float) -> dict[str, object]:
        promotion = read_json(self.s.work.run(self.s.run_id) / "promotion.json")
        return {
            "run_id": self.s.run_id,
            "best": promotion["model"],
            "promoted": int(promotion["promoted"]),
            "version": promotion["version"],
            "served_accuracy": self.results.get("smoke", {}).get("accuracy", "nan"),
            "wall_seconds": wall,
        }

    def summary(self, wall: float) -> str:
        run_dir = self.s.work.run(self.s.run_id)
        promotion = read_json(run_dir / "promotion.json")
        rows = [("candidate", "test accuracy", "train time", "restarts", "promoted")]
        for model in self.s.models:
            accuracy = read_json(self.s.work.candidate(self.s.run_id, model).eval / "metrics.json")["accuracy"]
            promoted = (
                f"yes: version {promotion['version']}"
                if promotion["promoted"] and promotion["model"] == model
                else "no"
            )
            rows.append(
                (
                    model,
                    f"{accuracy:.4f}",
                    duration(self.timings[f"train:{model}"]),
                    str(len(self.restarts.get(model, []))),
                    promoted,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        fit = [
            f"{model} {duration(float(self.results[f'train:{model}']['train_seconds']))}"
            for model in self.s.models
            if "train_seconds" in self.results.get(f"train:{model}", {})
        ]
        served = self.results.get("smoke", {}).get("accuracy", "?")
        restarts = self.restart_lines()
        lines += ["", *restarts] if restarts else []
        stages = ", ".join(f"{name} {duration(seconds)}" for name, seconds in self.timings.items())
        lines += [
            "",
            textwrap.fill(
                "train time: each training job from starting its workers to their exit: TensorFlow's start-up, "
                f"the epochs (in model.fit: {', '.join(fit) or 'see the logs'}), saving the model, uploading it "
                "to MLflow, and any restarts.",
                width=100,
                subsequent_indent="  ",
            ),
            f"promotion: {promotion['reason']}",
            f"served: {self.s.work.served()}/{promotion['version']} (test accuracy through the server: {served})",
            f"time: {duration(wall)} in all; {stages}",
            f"logs: {self.log_dir()}/; results for scripts: {run_dir / RESULTS_FILE}",
            "next: make serve, then make predict in another terminal; make ui (MLflow), make tensorboard, make status",
        ]
        return "\n".join(lines)


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


def check_resources(workers: int, worker_mib: int) -> None:
    """Refuses workers that cannot fit in memory; warns when they far outnumber the CPUs."""
    available = available_memory()
    needed = workers * worker_mib * 2**20
    if available is not None and needed > available:
        fit = max(1, available // (worker_mib * 2**20))
        raise JobError(
            f"{workers} workers need about {needed / 2**30:.1f} GiB ({worker_mib / 1024:.1f} GiB each) but "
            f"{available / 2**30:.1f} GiB is available: use WORKERS={min(fit, workers - 1)} or fewer, or free memory"
        )
    cpus = cpu_count()
    if workers > 2 * cpus:
        log.warning(
            "%d workers share %d CPU%s (%.2f of a CPU each): beyond the CPUs, more workers on one machine only "
            "add overhead (docs/benchmarks.md); WORKERS=%d or fewer trains faster here",
            workers,
            cpus,
            "s" if cpus > 1 else "",
            cpus / workers,
            cpus,
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=path_arg, default=Path(".work"), help="datasets, runs, models, tracking")
    p.add_argument(
        "--dataset",
        choices=("fashion_mnist", "idx", "synthetic"),
        default="fashion_mnist",
        help="where the images come from",
    )
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs per candidate")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes per candidate")
    p.add_argument(
        "--models", type=csv_list(models.NAMES), default=",".join(models.NAMES), help="comma-separated candidates"
    )
    p.add_argument(
        "--run-id", type=plain_name, default=time.strftime("local-%Y%m%d-%H%M%S"), help="names this run's folder"
    )
    p.add_argument("--min-accuracy", type=fraction, default=0.7, help="the smoke check's threshold")
    p.add_argument(
        "--max-restarts",
        type=non_negative_int,
        default=3,
        help="restarts of a training job whose worker was killed or exited 128-255",
    )
    p.add_argument(
        "--worker-memory",
        type=positive_int,
        default=WORKER_MEMORY_MIB,
        metavar="MIB",
        help="memory one training worker needs; the run refuses workers that do not fit",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    p.add_argument(
        "--promote",
        choices=("gate", "force"),
        default="gate",
        help="gate: promote only a candidate better beyond noise; force: promote the best anyway",
    )
    for name in ("ingest", "train", "promote"):
        p.add_argument(
            f"--{name}-args",
            default="",
            metavar="ARGS",
            help=f"extra flags for every {name} command, e.g. --{name}-args='--seed 1'",
        )
    args = p.parse_args(argv)
    extra = {}
    for name in ("ingest", "train", "promote"):
        try:
            extra[name] = shlex.split(getattr(args, f"{name}_args"))
        except ValueError as err:
            raise JobError(f"--{name}-args: {err}") from None
    if args.promote == "force":
        extra["promote"].insert(0, "--force")

    check_resources(args.workers, args.worker_memory)
    work = Work(check_work_dir(args.work_dir))
    create_store = not os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if create_store:
        os.environ["MLFLOW_TRACKING_URI"] = tracking.local_uri(work)
    settings = Settings(
        work=work,
        run_id=args.run_id,
        dataset=args.dataset,
        epochs=args.epochs,
        workers=args.workers,
        models=args.models,
        min_accuracy=args.min_accuracy,
        max_restarts=args.max_restarts,
        python=args.python,
        extra=extra,
        create_store=create_store,
    )
    runner = Runner(settings)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)
    log.info(
        "run %s: %s, %s × %d worker%s, %d epochs; tracking: %s",
        args.run_id,
        args.dataset,
        ", ".join(args.models),
        args.workers,
        "s" if args.workers > 1 else "",
        args.epochs,
        os.environ["MLFLOW_TRACKING_URI"],
    )
    started = time.monotonic()
    try:
        runner.run()
    except Stopped as stop:
        runner.stop_all()
        print(
            f"stopped ({stop}): every process of this run has ended, "
            f"{time.monotonic() - runner.stop_requested:.1f} s after the signal",
            file=sys.stderr,
            flush=True,
        )
        return 128 + stop.signum
    finally:
        runner.stop_all()
    wall = time.monotonic() - started
    run_dir = work.run(args.run_id)
    write_json(run_dir / "timings.json", {"stages": runner.timings, "wall_seconds": wall})
    results = runner.results_for_machines(wall)
    (run_dir / RESULTS_FILE).write_text(
        "".join(f"{k}={f'{v:.6g}' if isinstance(v, float) else v}\n" for k, v in results.items())
    )
    print("\n" + runner.summary(wall), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
