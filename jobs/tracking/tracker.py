"""MLflow tracking that never throws training away, laid out the way MLflow's UI expects.

The jobs read only MLFLOW_TRACKING_URI (and MLFLOW_EXPERIMENT_NAME, default `fmnist`), so the
same code logs to a local SQLite store or to the cluster's server; it uses MLflow's client and
entities only, which mlflow-skinny (the jobs image) has. Every call is retried a bounded number
of times; if tracking still fails, the job logs a warning, stops tracking for the rest of its
run, and carries on: a trained model is worth more than its metrics. That holds for promotion
too: a version that reached the serving folder stays served even if the registry cannot be
told (promotion.json then says `registered_version: null`). Only callers that cannot work
without a store (the local runner creating its experiment) pass `required=True`.

What goes where:

    experiment fmnist            tag mlflow.experimentKind = custom_model_development
      run <pipeline run id>      the parent: dataset inputs, the decision, report.md, plots
        run cnn, dropout, ...    one child per candidate (train, evaluate and promote log into it):
                                 params, per-epoch metrics, dataset inputs, a LoggedModel
    registered model fmnist      a version per promotion, created from the LoggedModel;
                                 alias champion on the one served

Whichever step of a pipeline run comes first finds or creates its parent run: under a file
lock on the shared volume (`<work>/runs/<run>/mlflow.json` records it), after a search for a
run that an earlier, killed attempt may have created.

On one machine the store is SQLite under the work dir: `python -m jobs.tracking --work-dir W`
creates it with the experiment (the local runner does this in a child process, beside ingest,
so that it never loads MLflow itself).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from jobs.core.cli import JobError, parser
from jobs.core.files import locked, read_json, write_json
from jobs.core.paths import Work
from jobs.ingest.data import CLASS_NAMES, IMAGE_SHAPE
from jobs.tracking import system_metrics

log = logging.getLogger("jobs.tracking")
T = TypeVar("T")

DEFAULT_EXPERIMENT = "fmnist"
# The experiment tag MLflow's UI reads for the kind of an experiment (the UI's
# ExperimentKind); custom_model_development is "Machine learning", as opposed to GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run page's Description
CONTEXT_TAG = "mlflow.data.context"  # a dataset input's role, shown beside it in the UI
# MLflow's own HTTP retries back off for minutes; bound them, and retry here instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def dataset_inputs(dataset: str, folder: Path, records: dict[str, dict], source: dict) -> dict[str, Any]:
    """MLflow dataset entities for a pipeline's splits, from the ingest manifest's records
    (`{split: {"examples", "digest"}}`), keyed by split."""
    from mlflow.entities import Dataset

    def tensor(dtype: str, shape: list[int]) -> str:
        return json.dumps([{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}])

    schema = json.dumps(
        {"mlflow_tensorspec": {"features": tensor("uint8", [-1, *IMAGE_SHAPE]), "targets": tensor("uint8", [-1])}}
    )
    entities = {}
    for split, record in records.items():
        profile = {"examples": record["examples"], "split": split, "origin": source}
        entities[split] = Dataset(
            name=f"{dataset}-{split}",
            digest=record["digest"],
            source_type="local",
            source=json.dumps({"uri": folder.resolve().as_uri()}),
            schema=schema,
            profile=json.dumps(profile, sort_keys=True),
        )
    return entities


def refused(err: Exception) -> bool:
    """An answer from a working store that rejects the request (a 4xx other than 429), as
    opposed to a store that is away, overloaded or failing (retried, then tracking stops)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException):
        return False
    status = err.get_http_status_code()
    return 400 <= status < 500 and status != 429


class Tracker:
    def __init__(self, required: bool = False, attempts: int = 3, backoff: float = 2.0, uri: str | None = None):
        self.uri = (uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")).strip()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        self.required = required
        self.attempts = attempts
        self.backoff = backoff
        self.enabled = bool(self.uri)
        self._client = None
        self._experiment_id: str | None = None
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
                if refused(err):
                    # The store is there and keeps saying no to this one request (a race lost to
                    # another job's insert settles by the retry): skip it, keep tracking.
                    log.warning("tracking: %s was refused (%s); carrying on without it", what, reason)
                    return None
                log.warning("tracking: %s failed (%s); tracking is off for the rest of this job", what, reason)
                self.enabled = False
        return None

    # -- experiment and runs ---------------------------------------------------------------

    def experiment_id(self) -> str | None:
        """The experiment, created if absent, marked as a model-training experiment."""
        if self._experiment_id is not None:
            return self._experiment_id

        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    return self.client.create_experiment(self.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
                except Exception:
                    # Another job created it meanwhile.
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id

        self._experiment_id = self.call("find the experiment", get_or_create)
        return self._experiment_id

    def start_run(self, name: str, tags: dict[str, str], parent: str | None = None) -> str | None:
        experiment_id = self.experiment_id()
        if experiment_id is None:
            return None
        tags = {**tags, **({PARENT_TAG: parent} if parent else {})}
        run = self.call("start a run", lambda: self.client.create_run(experiment_id, run_name=name, tags=tags))
        return run.info.run_id if run else None

    def pipeline_run(self, work: Work, run_id: str, tags: dict[str, str] | None = None) -> str | None:
        """The parent run of pipeline run `run_id`: recorded, found, or created, once."""
        if not self.enabled:
            return None
        record = work.mlflow_parent(run_id)
        with locked(record.with_name(".mlflow.lock")):
            if record.exists():
                return read_json(record).get("mlflow_run_id")
            experiment_id = self.experiment_id()
            if experiment_id is None:
                return None
            query = f"tags.pipeline_run = '{run_id}' and tags.role = 'pipeline'"
            found = self.call(
                "find the pipeline's run",
                lambda: self.client.search_runs([experiment_id], query, max_results=1, order_by=["start_time ASC"]),
            )
            if found is None:
                return None
            parent = found[0].info.run_id if found else None
            if parent is None:
                parent = self.start_run(run_id, {"pipeline_run": run_id, "role": "pipeline", **(tags or {})})
            if parent is not None:
                write_json(record, {"mlflow_run_id": parent, "experiment_id": experiment_id})
            return parent

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if run_id:
            from mlflow.entities import Param

            batch = [Param(k, str(v)) for k, v in params.items()]
            self.call("log params", lambda: self.client.log_batch(run_id, params=batch))

    def log_metrics(
        self,
        run_id: str | None,
        metrics: dict[str, float],
        step: int = 0,
        model_id: str | None = None,
        dataset=None,
    ) -> None:
        """Metrics at `step`; with `model_id` and `dataset` (an MLflow Dataset) they also show on
        the LoggedModel's page, as measured on that dataset."""
        if run_id:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            extra = {"model_id": model_id}
            if dataset is not None:
                extra.update(dataset_name=dataset.name, dataset_digest=dataset.digest)
            batch = [Metric(k, float(v), now, step, **extra) for k, v in metrics.items()]
            self.call("log metrics", lambda: self.client.log_batch(run_id, metrics=batch))

    def log_inputs(self, run_id: str | None, datasets: dict[str, Any]) -> None:
        """Dataset inputs, each tagged with its role (train, validation, test)."""
        if run_id and datasets:
            from mlflow.entities import DatasetInput, InputTag

            inputs = [DatasetInput(dataset, [InputTag(CONTEXT_TAG, split)]) for split, dataset in datasets.items()]
            self.call("log dataset inputs", lambda: self.client.log_inputs(run_id, datasets=inputs))

    def log_artifacts(self, run_id: str | None, local_dir: Path, artifact_path: str | None = None) -> None:
        if run_id:
            self.call(
                f"upload {local_dir.name}",
                lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path),
            )

    def log_artifact(self, run_id: str | None, local_file: Path, artifact_path: str | None = None) -> None:
        if run_id:
            self.call(
                f"upload {local_file.name}",
                lambda: self.client.log_artifact(run_id, str(local_file), artifact_path),
            )

    def log_plots(self, run_id: str | None, folder: Path, artifact_path: str, step: int = 0) -> None:
        """The files of `folder` as artifacts under `artifact_path` (report.md links to them), and
        each PNG in it also through `log_image`, keyed by its name, so that the run page's charts
        show it; a key the run already has is not logged again."""
        if not run_id:
            return
        self.log_artifacts(run_id, folder, artifact_path)

        def images() -> int:
            from PIL import Image

            # log_image names its files images/<key>+step+<step>+timestamp+<ms>+<uuid>[+compressed]
            logged = {Path(f.path).name.split("+step+")[0] for f in self.client.list_artifacts(run_id, "images")}
            fresh = [png for png in sorted(folder.glob("*.png")) if png.stem not in logged]
            for png in fresh:
                with Image.open(png) as image:
                    self.client.log_image(run_id, image.convert("RGB"), key=png.stem, step=step, synchronous=True)
            return len(fresh)

        self.call(f"log the plots of {folder.name} as images", images)

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if run_id:
            from mlflow.entities import RunTag

            batch = [RunTag(k, str(v)) for k, v in tags.items()]
            self.call("set tags", lambda: self.client.log_batch(run_id, tags=batch))

    def system_metrics(self, run_id: Callable[[], str | None], node: str | None) -> system_metrics.Monitor:
        """MLflow's system metrics of this process, logged into the run `run_id()` names, as
        `node`'s (jobs.tracking.system_metrics); `stop()` it before the run ends."""
        return system_metrics.Monitor(self.uri if self.enabled else "", run_id, node)

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self.call("end the run", lambda: self.client.set_terminated(run_id, status))

    # -- models and the registry -----------------------------------------------------------

    def log_model(
        self,
        run_id: str | None,
        saved_model: Path,
        name: str,
        step: int,
        example,
        params: dict[str, Any],
        tags: dict[str, str],
    ) -> str | None:
        """Logs `saved_model` through `mlflow.pyfunc` (jobs.tracking.classifier) as a LoggedModel
        of run `run_id`, its output at `step`, with its signature, an input example (`example`:
        a few uint8 [N,28,28] images) and its pinned requirements; returns the model id."""
        experiment_id = self.experiment_id()
        if not run_id or experiment_id is None:
            return None
        # Created here, apart from the upload, so that a retried upload fills the same model.
        model = self.call(
            "create the logged model",
            lambda: self.client.create_logged_model(
                experiment_id,
                name=name,
                source_run_id=run_id,
                params={k: str(v) for k, v in params.items()},
                tags=tags,
                model_type="classifier",
            ),
        )
        if model is None:
            return None

        def upload() -> str:
            import mlflow
            from mlflow.models import Model

            from jobs.tracking import classifier  # loads mlflow.pyfunc: only where a model is logged

            mlflow.set_tracking_uri(self.uri)
            # Model.log is what mlflow.pyfunc.log_model calls, with the run named rather than
            # active: it writes MLmodel, the requirements and the example, uploads the folder,
            # links the model to the run at `step` and marks it READY.
            return Model.log(
                artifact_path=None,
                name=name,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=model.model_id,
                step=step,
                python_model=str(Path(classifier.__file__)),
                artifacts={classifier.SAVED_MODEL: str(saved_model)},
                signature=signature(),
                input_example={classifier.SIGNATURE: np.asarray(example, np.uint8)},
                pip_requirements=requirements(),
            ).model_id

        return self.call("log the model", upload)

    def register(
        self,
        name: str,
        model_id: str | None,
        run_id: str | None,
        source: str,
        alias: str | None,
        tags: dict[str, str],
        description: str = "",
    ) -> str | None:
        """A new version of registered model `name`, created from LoggedModel `model_id` (or,
        without one, from `source` and run `run_id`), with `alias` (if any) pointed at it; returns
        the version."""

        def create() -> str:
            import mlflow
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_registered_model(name, description=description or None)
            except MlflowException as err:
                if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                    raise
            if model_id and not self.uri.startswith(("http://", "https://")):
                # A store used directly (SQLite): mlflow.register_model records the version on
                # the LoggedModel (its mlflow.modelVersions tag, which the model's page shows).
                mlflow.set_tracking_uri(self.uri)
                mlflow.set_registry_uri(self.uri)
                version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
            else:
                # A tracking server records it itself when it creates the version
                # (mlflow/server/handlers.py); register_model would add it a second time from
                # the client (mlflow/tracking/_model_registry/fluent.py, 3.17.2).
                origin = f"models:/{model_id}" if model_id else source
                version = self.client.create_model_version(name, origin, run_id=run_id, tags=tags, model_id=model_id)
            if alias:
                self.client.set_registered_model_alias(name, alias, version.version)
            return str(version.version)  # an int from a SQL store, a string over REST

        return self.call(f"register {name}", create)


def signature():
    """The model's signature: the `pixels` input and the three outputs, as tensors."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from jobs.tracking import classifier

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE), classifier.SIGNATURE)]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, len(CLASS_NAMES)), "probabilities"),
                TensorSpec(np.dtype(np.int64), (-1,), "class_id"),
                TensorSpec(np.dtype(str), (-1,), "class_name"),
            ]
        ),
    )


def requirements() -> list[str]:
    """What jobs.tracking.classifier imports, pinned to this environment's versions (MLflow adds
    its own pin); named rather than inferred, which would load the model once more in a child."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("tensorflow", "numpy")]


def create_local_store(work: Work) -> str:
    """Creates the SQLite store under the work dir and the experiment, with its artifacts
    beside the store (MLflow would otherwise put them in ./mlruns). Returns the URI."""
    store = work.mlflow.resolve()
    store.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(required=True, uri=work.mlflow_uri)
    if tracker.call("open the store", lambda: tracker.client.get_experiment_by_name(tracker.experiment)) is None:
        tracker.call(
            "create the experiment",
            lambda: tracker.client.create_experiment(
                tracker.experiment,
                artifact_location=(store / "artifacts").as_uri(),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            ),
        )
    return tracker.uri


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("Create the local MLflow store (SQLite) under a work dir, with the experiment.")
    p.add_argument("--work-dir", type=Path, required=True, help="the work dir; the store goes to <work-dir>/mlflow")
    args = p.parse_args(argv)
    log.info("tracking store ready: %s", create_local_store(Work(args.work_dir)))
    return 0
