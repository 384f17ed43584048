"""Where everything lives on the shared volume (a PVC in the cluster, WORK_DIR here): the one
map of the work dir; every job asks it rather than joining names of its own.

<work>/data/<dataset>/             the ingested dataset (manifest.json + .npy arrays)
<work>/tfds/                       tensorflow-datasets' download cache
<work>/idx/                        where `--dataset idx` looks for the *-ubyte.gz files
<work>/runs/<run>/<model>/         one candidate: model/ (SavedModel), backup/, tensorboard/,
                                   history.json, run.json, attempts/, eval/ (metrics.json,
                                   test_correct.npy: which test images it got right)
<work>/runs/<run>/promotion.json   what promotion decided; report.md and plots/ beside it
<work>/runs/<run>/canary.json      what the canary step decided
<work>/runs/<run>/logs/            every process of a local run; results.txt, timings.json
<work>/models/<name>/<N>/          served versions, TF Serving's layout (promotion.json in each)
<work>/models/<name>.history.jsonl the served history: a line per promotion and rollback
<work>/models/serving.config       the stable servers' TF Serving model config file
<work>/models/serving-canary.config  the canary servers' (components/canary)
<work>/models/canary.json          the canary in progress, if any
<work>/mlflow/                     the local MLflow store (mlflow.db, artifacts/) when no
                                   MLFLOW_TRACKING_URI is set
<work>/monitor/targets/*.json      the local model servers running now, for `make monitor`'s
                                   Prometheus (its file-based service discovery)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

MODEL_NAME = "fmnist"


@dataclasses.dataclass(frozen=True)
class Work:
    root: Path

    def dataset(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def tfds(self) -> Path:
        return self.root / "tfds"

    @property
    def idx(self) -> Path:
        return self.root / "idx"

    def run(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def candidate(self, run_id: str, model: str) -> Candidate:
        return Candidate(self.run(run_id) / model)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def logs(self, run_id: str) -> Path:
        return self.run(run_id) / "logs"

    def promotion(self, run_id: str) -> Path:
        return self.run(run_id) / "promotion.json"

    def canary_record(self, run_id: str) -> Path:
        return self.run(run_id) / "canary.json"

    def plots(self, run_id: str) -> Path:
        return self.run(run_id) / "plots"

    def report(self, run_id: str) -> Path:
        return self.run(run_id) / "report.md"

    def results(self, run_id: str) -> Path:
        """name=value lines for scripts (a local run's)."""
        return self.run(run_id) / "results.txt"

    def timings(self, run_id: str) -> Path:
        return self.run(run_id) / "timings.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def served(self, name: str = MODEL_NAME) -> Path:
        return self.models / name

    def history(self, name: str = MODEL_NAME) -> Path:
        return self.models / f"{name}.history.jsonl"

    def serving_config(self, track: str = "stable") -> Path:
        """The model config file of one track's servers (see jobs.core.serving_config)."""
        return self.models / ("serving.config" if track == "stable" else f"serving-{track}.config")

    @property
    def canary_state(self) -> Path:
        return self.models / "canary.json"

    def mlflow_parent(self, run_id: str) -> Path:
        """Where a pipeline run keeps the id of its parent MLflow run."""
        return self.run(run_id) / "mlflow.json"

    @property
    def scrape_targets(self) -> Path:
        return self.root / "monitor" / "targets"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """The local SQLite store's URI (an absolute path: the jobs may run from anywhere)."""
        return f"sqlite:///{self.mlflow.resolve() / 'mlflow.db'}"


@dataclasses.dataclass(frozen=True)
class Candidate:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def best(self) -> Path:
        """The best validation epoch's weights while training (jobs.train.recipe)."""
        return self.root / "best"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def test_correct(self) -> Path:
        """Which test images the candidate classifies right, in order (evaluate writes it)."""
        return self.eval / "test_correct.npy"

    def attempts(self, worker: str) -> Path:
        return self.root / "attempts" / f"{worker}.json"


def version_record(folder: Path) -> Path:
    """A served version folder's promotion.json."""
    return folder / "promotion.json"


def versions(base: Path) -> dict[int, Path]:
    """The version folders under a model base path, as TF Serving sees them: numeric names
    only (hidden temp dirs and other names are never versions), ascending."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return {}
    found = {int(e.name): Path(e.path) for e in entries if _numeric(e.name) and _is_dir(e)}
    return dict(sorted(found.items()))


def unreadable_versions(base: Path) -> dict[str, str]:
    """Numeric names under `base` that cannot be read as folders (a symlink loop, a dangling
    link): `versions` leaves them out; what is wrong with each, by name."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return {}
    found = {}
    for entry in (e for e in entries if _numeric(e.name)):
        try:
            os.stat(entry.path)
        except OSError as err:
            found[entry.name] = err.strerror or str(err)
    return found


def _numeric(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a version
        return False
