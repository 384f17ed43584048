"""Run the whole pipeline on this machine: the cluster's steps, with local processes.

Each step of `jobs.steps` runs as the same module with the same flags as in the Argo workflow.
A training step runs WORKERS local processes, each given TF_CONFIG on free localhost ports the
way the training operator builds it. Like a TFJob with `restartPolicy: ExitCode`, a worker that
exits 1-127 (its own error) fails the training at once with its log tail, and one that exits
128-255 (a lost peer: `jobs.train` exits 203) or is killed by a signal restarts the group, at
most --max-restarts times; training resumes from its backup.
The serving steps run against a local server on a free port; with --rollout canary, against
two (stable and canary, each pinned by its own config file as TF Serving is in the cluster),
and the canary step decides between them. At the end: a summary table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs import steps
from jobs.core import lifecycle, serving_config
from jobs.core.cli import JobError
from jobs.core.cpus import cpu_count, worker_env
from jobs.core.files import write_json
from jobs.local import processes, summary
from jobs.local import settings as local_settings
from jobs.local.processes import Process, free_ports
from jobs.local.settings import Settings
from jobs.release import state as release_state
from jobs.train import distributed, run_info

log = logging.getLogger("jobs.local")

STOP_GRACE_SECONDS = 3.0  # from SIGTERM to SIGKILL when the run is stopped
SILENT_SECONDS = 20.0  # a shown process silent this long gets a "still working" line


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Runner:
    def __init__(self, settings: Settings):
        self.s = settings
        self.children: list[Process] = []
        self.timings: dict[str, float] = {}
        self.results: dict[str, dict[str, str]] = {}
        self.restarts: dict[str, list[dict[str, str]]] = {}  # per candidate: how each attempt ended
        self.url = ""
        self.stable_url = ""
        self.stop_requested: float | None = None  # when the first stop signal came
        self.canary_failure = ""  # why the canary step rolled back, if it did
        self._spawning = False
        self._deferred: int | None = None

    # -- processes ------------------------------------------------------------------------

    def params(self, **overrides: str) -> dict[str, str]:
        """The steps' parameters: the pipeline's defaults (jobs.steps), this run's settings."""
        return {
            **steps.defaults(),
            "work_dir": str(self.s.work.root),
            "run_id": self.s.run_id,
            "dataset": self.s.dataset,
            "epochs": str(self.s.epochs),
            "patience": str(self.s.patience),
            "model": "",
            "models": ",".join(self.s.models),
            "url": self.url,
            "min_accuracy": str(self.s.min_accuracy),
            "rollout": self.s.rollout,
            "stable_url": self.stable_url or self.url,
            "canary_url": self.url,
            "canary_seconds": f"{self.s.canary_seconds:g}",
            **overrides,
        }

    def command(self, step: steps.Step, **overrides: str) -> list[str]:
        return step.command(self.s.python, **self.params(**overrides)) + self.s.extra.get(step.name, [])

    def spawn(self, argv: list[str], log_name: str, prefix: str, echo: bool = True, **env: str) -> Process:
        # A stop signal that comes while a child is being started waits until it is on our list.
        self._spawning = True
        try:
            shown = echo and self.stop_requested is None
            process = Process(argv, self.s.work.logs(self.s.run_id) / log_name, prefix, shown, {**os.environ, **env})
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
        for child in self.children:  # from here on a person reads only "stopped" (the logs keep the rest)
            child.mute()
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

    def stop(self, group: list[Process], grace: float = STOP_GRACE_SECONDS) -> None:
        """Ends processes and their process groups together (`processes.stop`) and takes them
        off the list of children."""
        processes.stop(group, grace)
        for process in group:
            if process in self.children:
                self.children.remove(process)

    # -- steps ----------------------------------------------------------------------------

    def run_single(self, step: steps.Step) -> dict[str, str]:
        process = self.spawn(self.command(step), f"{step.name}.log", f"[{step.name}]", FMNIST_THREADS=str(cpu_count()))
        if process.wait() != 0:
            if step.name == "canary" and self.s.work.canary_record(self.s.run_id).exists():
                # A canary rolled back: decided and carried out, so the summary says so; the run
                # still ends failed, with the step's reason as its last line.
                self.canary_failure = process.reason()
                self.children.remove(process)
                return process.results
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
        shares = worker_env(self.s.workers, self.s.pin)  # FMNIST_THREADS, and FMNIST_CPUS when pinned
        candidate = self.s.work.candidate(self.s.run_id, model)
        self.restarts[model] = []
        while True:
            addresses = [f"localhost:{port}" for port in free_ports(self.s.workers)]
            group = []
            for index, share in enumerate(shares):
                env = dict(share)
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
            run_info.record_restart(candidate, restart)
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
        return processes.wait_group(group, worst=lambda process: distributed.retryable(process.popen.returncode))

    @contextlib.contextmanager
    def server(self) -> Iterator[None]:
        """The local model server (TF Serving's REST API) on a free port, for the serving steps,
        reading the stable servers' config file; with --rollout canary a second one reading the
        canary's, which the serving checks then talk to (they check the new version)."""

        tracks = ("stable", "canary") if self.s.rollout == "canary" else ("stable",)
        ports = dict(zip(tracks, free_ports(len(tracks)), strict=True))
        started = []
        # `make monitor` scrapes the servers listed here (Prometheus's file-based service discovery).
        targets = self.s.work.scrape_targets / f"local-{self.s.run_id}.json"
        try:
            for track, port in ports.items():
                config = serving_config.track_path(self.s.work, track)
                argv = processes.server_argv(self.s.python, self.s.work.served(), port, config=config)
                name = "serve" if track == "stable" else "serve-canary"
                started.append(self.spawn(argv, f"{name}.log", f"[{name}]", echo=False))
            self.stable_url = f"http://127.0.0.1:{ports['stable']}"
            self.url = f"http://127.0.0.1:{ports.get('canary', ports['stable'])}"
            listed = [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"track": track, "run": self.s.run_id}}
                for track, port in ports.items()
            ]
            write_json(targets, listed)
            yield
        finally:
            targets.unlink(missing_ok=True)
            self.stop(started)

    def timed(self, name: str, fn, *args):
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.monotonic() - started

    def run(self) -> None:
        store = self.spawn_store() if self.s.create_store else None
        processes.say_when_silent(lambda: list(self.children), SILENT_SECONDS)
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

    def claim(self) -> None:
        """Refuses to start while a canary is open (its pins would hold this run's version
        back until the wait for it timed out), and claims the run's folder: a run id in use
        (two runs started in the same second with one id) fails here, before any training."""
        work, run_id = self.s.work, self.s.run_id
        canary = release_state.read_canary(work)
        if canary is not None:
            raise JobError(
                f"a canary of version {canary['canary_version']} (run {canary.get('run_id')}) is still open in "
                f"{work.root}: end it first with make canary-end (it rolls it back)"
            )
        work.runs.mkdir(parents=True, exist_ok=True)
        try:
            work.run(run_id).mkdir()
        except FileExistsError:
            raise JobError(f"run {run_id} exists already in {work.runs}: choose another --run-id") from None

    def close_canary(self) -> None:
        """A run that fails or is stopped after opening a canary ends it (rolls it back)
        before it exits: left open, its pins would wedge every later run."""
        if self.s.rollout != "canary":
            return
        try:
            canary = release_state.read_canary(self.s.work)
        except JobError:
            canary = None  # not readable: make canary-end, which the next run's refusal names
        if canary is None or canary.get("run_id") != self.s.run_id:
            return
        log.warning("the run failed with its canary of version %s open: rolling it back", canary["canary_version"])
        argv = [self.s.python, "-m", "jobs.canary", "--work-dir", str(self.s.work.root), "--run-id", self.s.run_id]
        argv += ["--dataset", self.s.dataset, "--now", "rollback", "--only-own"]
        process = Process(argv, self.log_dir() / "canary-close.log", "[canary-close]", True, dict(os.environ))
        if process.wait() != 0:
            log.error("the canary could not be ended (%s): end it with make canary-end", process.log_path)

    def log_dir(self) -> Path:
        return self.s.work.logs(self.s.run_id)

    def spawn_store(self) -> Process:
        """Creates the local MLflow store in a child, beside ingest: MLflow takes seconds to
        load, and the runner itself never loads it."""
        argv = [self.s.python, "-m", "jobs.tracking", "--work-dir", str(self.s.work.root)]
        return self.spawn(argv, "tracking.log", "[mlflow]")

    def finish(self, process: Process, what: str) -> None:
        if process.wait() != 0:
            raise JobError(f"{what} failed\n{process.describe_failure()}")
        self.children.remove(process)


def main(argv: Sequence[str] | None = None) -> int:
    args = local_settings.build_parser().parse_args(argv)
    runner = Runner(local_settings.settings_from(args))
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
    runner.claim()
    started = time.monotonic()
    try:
        runner.run()
    except JobError:
        runner.stop_all()
        runner.close_canary()
        raise
    except Stopped as stop:
        runner.stop_all()
        runner.close_canary()
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
    summary.write(runner, wall)
    print("\n" + summary.table(runner, wall), flush=True)
    if runner.canary_failure:
        print(runner.canary_failure, file=sys.stderr, flush=True)
        return 1
    return 0
