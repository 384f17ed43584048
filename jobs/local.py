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
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs import distributed, models, steps, train
from jobs.common import (
    JobError,
    cpu_count,
    csv_list,
    emit,
    parser,
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


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on localhost (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class Process:
    """A child in its own process group, its output copied to a log file (and, if `echo`,
    to our stdout with a prefix); the last lines and `name=value` results are kept."""

    def __init__(self, argv: list[str], log_path: Path, prefix: str, echo: bool, env: dict[str, str]):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.argv = argv
        self.log_path = log_path
        self.prefix = prefix
        self.echo = echo
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.results: dict[str, str] = {}
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
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
                match = re.fullmatch(r"([A-Za-z_][\w.]*)=(\S*)", line)
                if match:
                    self.results[match[1]] = match[2]
                if self.echo and not NOISE.search(line):
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


class Runner:
    def __init__(self, settings: Settings):
        self.s = settings
        self.children: list[Process] = []
        self.timings: dict[str, float] = {}
        self.results: dict[str, dict[str, str]] = {}
        self.restarts: dict[str, list[dict[str, str]]] = {}  # per candidate: how each attempt ended
        self.url = ""

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
        process = Process(argv, self.s.work.run(self.s.run_id) / "logs" / log_name, prefix, echo, {**os.environ, **env})
        self.children.append(process)
        return process

    def stop_all(self) -> None:
        for child in self.children:
            child.kill()
        self.children.clear()

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
        argv = self.command(step, model=model)
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
            process.kill()
            self.children.remove(process)

    def timed(self, name: str, fn, *args):
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.monotonic() - started

    def run(self) -> None:
        serving = contextlib.ExitStack()
        with serving:
            for step in steps.STEPS:
                log.info("step %s", step.name)
                if step.per_model:
                    for model in self.s.models:
                        self.results[f"{step.name}:{model}"] = self.timed(
                            f"{step.name}:{model}", self.run_workers, step, model
                        )
                    continue
                if "url" in step.parameters() and not self.url:
                    serving.enter_context(self.server())
                self.results[step.name] = self.timed(step.name, self.run_single, step)

    # -- report ---------------------------------------------------------------------------

    def restart_lines(self) -> list[str]:
        """One line per restart of a training job: which worker ended how, and why."""
        return [
            f"restart {i} of {model}: {r['ended']}: {r['reason']}"
            for model, restarts in self.restarts.items()
            for i, r in enumerate(restarts, 1)
        ]

    def summary(self) -> str:
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
                    f"{self.timings[f'train:{model}']:.1f} s",
                    str(len(self.restarts.get(model, []))),
                    promoted,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        served = self.results.get("smoke", {}).get("accuracy", "?")
        restarts = self.restart_lines()
        lines += ["", *restarts] if restarts else []
        lines += [
            "",
            f"promotion: {promotion['reason']}",
            f"served: {self.s.work.served()}/{promotion['version']} (test accuracy through the server: {served})",
            "stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()),
        ]
        return "\n".join(lines)


def setup_tracking(work: Work) -> None:
    """Without MLFLOW_TRACKING_URI, track into a SQLite store under the work dir, with the
    experiment's artifacts beside it (MLflow would otherwise put them in ./mlruns)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    store = (work.root / "mlflow").resolve()
    store.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    from jobs.tracking import Tracker

    tracker = Tracker(required=True)
    if tracker.client.get_experiment_by_name(tracker.experiment) is None:
        tracker.call(
            "create the experiment",
            lambda: tracker.client.create_experiment(
                tracker.experiment, artifact_location=(store / "artifacts").as_uri()
            ),
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path(".work"), help="datasets, runs, models, tracking")
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
    p.add_argument("--min-accuracy", type=float, default=0.7, help="the smoke check's threshold")
    p.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="restarts of a training job whose worker was killed or exited 128-255",
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    for name in ("ingest", "train"):
        p.add_argument(
            f"--{name}-args",
            default="",
            metavar="ARGS",
            help=f"extra flags for every {name} command, e.g. --{name}-args='--seed 1'",
        )
    args = p.parse_args(argv)

    work = Work(args.work_dir.resolve())
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
        extra={"ingest": shlex.split(args.ingest_args), "train": shlex.split(args.train_args)},
    )
    setup_tracking(work)
    runner = Runner(settings)

    def terminate(signum, _frame):
        raise JobError(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    try:
        runner.run()
    finally:
        runner.stop_all()
    wall = time.monotonic() - started
    write_json(work.run(args.run_id) / "timings.json", {"stages": runner.timings, "wall_seconds": wall})
    print("\n" + runner.summary(), flush=True)
    promotion = read_json(work.run(args.run_id) / "promotion.json")
    emit(
        run_id=args.run_id,
        best=promotion["model"],
        promoted=int(promotion["promoted"]),
        version=promotion["version"],
        served_accuracy=runner.results.get("smoke", {}).get("accuracy", "nan"),
        wall_seconds=wall,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
