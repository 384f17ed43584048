"""MLflow tracking that never throws training away.

The jobs read only MLFLOW_TRACKING_URI (and MLFLOW_EXPERIMENT_NAME, default `fmnist`), so the
same code logs to a local SQLite store or to the cluster's server. Every call is retried a
bounded number of times; if tracking still fails, the job logs a warning, stops tracking for
the rest of its run, and carries on: a trained model is worth more than its metrics. That
holds for promotion too: a version that reached the serving folder stays served even if the
registry cannot be told (promotion.json then says `registered_version: null`). Only callers
that cannot work without a store (the local runner creating its experiment) pass `required=True`.

On one machine the store is SQLite under the work dir: `python -m jobs.tracking --work-dir W`
creates it with the experiment (the local runner does this in a child process, beside ingest,
so that it never loads MLflow itself).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from jobs.common import JobError, parser, run
from jobs.paths import Work

log = logging.getLogger("jobs.tracking")
T = TypeVar("T")

DEFAULT_EXPERIMENT = "fmnist"
# MLflow's own HTTP retries back off for minutes; bound them, and retry here instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


class Tracker:
    def __init__(self, required: bool = False, attempts: int = 3, backoff: float = 2.0, uri: str | None = None):
        self.uri = (uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")).strip()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        self.required = required
        self.attempts = attempts
        self.backoff = backoff
        self.enabled = bool(self.uri)
        self._client = None
        if not self.enabled:
            if required:
                raise JobError("MLFLOW_TRACKING_URI is not set")
            log.warning("MLFLOW_TRACKING_URI is not set: nothing will be tracked")

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def call(self, what: str, fn: Callable[[], T]) -> T | None:
        """Runs one tracking call with bounded retries; on final failure disables tracking
        (or raises JobError when tracking is required)."""
        if not self.enabled:
            return None
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as err:  # MLflow raises many kinds for one cause: the store is away
                reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                if attempt < self.attempts:
                    log.warning("tracking: %s failed (%s); retry %d/%d", what, reason, attempt, self.attempts - 1)
                    time.sleep(self.backoff * attempt)
                    continue
                if self.required:
                    raise JobError(f"tracking at {self.uri} failed to {what}: {reason}") from None
                log.warning("tracking: %s failed (%s); tracking is off for the rest of this job", what, reason)
                self.enabled = False
        return None

    def experiment_id(self) -> str | None:
        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            try:
                return self.client.create_experiment(self.experiment)
            except Exception:
                # Another job created it meanwhile.
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
                return found.experiment_id

        return self.call("find the experiment", get_or_create)

    def start_run(self, name: str, tags: dict[str, str]) -> str | None:
        experiment_id = self.experiment_id()
        if experiment_id is None:
            return None
        run = self.call("start a run", lambda: self.client.create_run(experiment_id, run_name=name, tags=tags))
        return run.info.run_id if run else None

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if run_id:
            from mlflow.entities import Param

            batch = [Param(k, str(v)) for k, v in params.items()]
            self.call("log params", lambda: self.client.log_batch(run_id, params=batch))

    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int = 0) -> None:
        if run_id:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self.call("log metrics", lambda: self.client.log_batch(run_id, metrics=batch))

    def log_artifacts(self, run_id: str | None, local_dir: Path, artifact_path: str | None = None) -> None:
        if run_id:
            self.call(
                f"upload {local_dir.name}",
                lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path),
            )

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if run_id:
            from mlflow.entities import RunTag

            batch = [RunTag(k, str(v)) for k, v in tags.items()]
            self.call("set tags", lambda: self.client.log_batch(run_id, tags=batch))

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self.call("end the run", lambda: self.client.set_terminated(run_id, status))

    def register(self, name: str, run_id: str | None, source: str, alias: str, tags: dict[str, str]):
        """Registers `source` as a new version of model `name` and points `alias` at it."""

        def create() -> str:
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_registered_model(name)
            except MlflowException as err:
                if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                    raise
            version = self.client.create_model_version(name, source, run_id=run_id, tags=tags)
            self.client.set_registered_model_alias(name, alias, version.version)
            return version.version

        return self.call(f"register {name}", create)


def local_uri(work: Work) -> str:
    """The local SQLite store's URI (an absolute path: the jobs may run from anywhere)."""
    return f"sqlite:///{work.mlflow.resolve() / 'mlflow.db'}"


def create_local_store(work: Work) -> str:
    """Creates the SQLite store under the work dir and the experiment, with its artifacts
    beside the store (MLflow would otherwise put them in ./mlruns). Returns the URI."""
    store = work.mlflow.resolve()
    store.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(required=True, uri=local_uri(work))
    if tracker.call("open the store", lambda: tracker.client.get_experiment_by_name(tracker.experiment)) is None:
        tracker.call(
            "create the experiment",
            lambda: tracker.client.create_experiment(
                tracker.experiment, artifact_location=(store / "artifacts").as_uri()
            ),
        )
    return tracker.uri


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("Create the local MLflow store (SQLite) under a work dir, with the experiment.")
    p.add_argument("--work-dir", type=Path, required=True, help="the work dir; the store goes to <work-dir>/mlflow")
    args = p.parse_args(argv)
    log.info("tracking store ready: %s", create_local_store(Work(args.work_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
