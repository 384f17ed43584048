"""Promote the best candidate to the next served version, if it beats the one served now.

The best candidate (highest test accuracy) is compared with the served version re-scored on
the same test split; it is promoted only if it is strictly better, or nothing is served, or
with --force. It becomes `<work>/models/fmnist/<N>/`, TF Serving's layout: copied into a
hidden temp dir and renamed, under a lock, so a server polling the folder never sees a partial
version and two promotions never take the same number. The model servers' config file then
names the model (`jobs.serving_config`: TF Serving starts before any model exists and loads
the model once that file lists it). It is then registered in the MLflow model registry under
`fmnist` with the alias `champion`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs import models, serving_config
from jobs.common import JobError, add_run_arguments, atomic_dir, emit, parser, read_json, run, write_json
from jobs.paths import MODEL_NAME, Work, versions

log = logging.getLogger("jobs.promote")

ALIAS = "champion"


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(best: float, served: float | None, force: bool = False) -> Decision:
    """Promotion's rule: strictly better than what is served, or nothing served, or forced."""
    if served is None:
        return Decision(True, "nothing is served yet")
    if best > served:
        return Decision(True, f"{best:.4f} beats the served {served:.4f}")
    if force:
        return Decision(True, f"forced, although {best:.4f} does not beat the served {served:.4f}")
    return Decision(False, f"{best:.4f} does not beat the served {served:.4f}")


@contextlib.contextmanager
def locked(base: Path) -> Iterator[None]:
    """An exclusive lock over the model base path, held across choose-number-copy-rename."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".promote.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def best_candidate(work: Work, run_id: str, names: Sequence[str]) -> tuple[str, float, dict[str, float]]:
    scores = {}
    for name in names:
        path = work.candidate(run_id, name).eval / "metrics.json"
        if not path.exists():
            raise JobError(f"candidate {name} of run {run_id} has not been evaluated ({path} is missing)")
        scores[name] = float(read_json(path)["accuracy"])
    best = max(names, key=lambda name: scores[name])  # the first listed wins a tie
    return best, scores[best], scores


def served_accuracy(model_dir: Path, test) -> float | None:
    """The served version re-scored on this test split; None if it cannot be loaded."""
    from jobs.evaluate import metrics, predict

    try:
        return metrics(predict(model_dir, test.images), test.labels)["accuracy"]
    except JobError as err:
        log.warning("the served version cannot be scored (%s); treating it as absent", err)
        return None


def publish(source: Path, base: Path, record: dict) -> int:
    """Copies a SavedModel in as the next version; call with the lock held."""
    # Temp dirs of promotions that were killed mid-copy: with the lock held, none is live.
    for stale in base.glob(".*.tmp-*"):
        log.warning("removing %s, left by an interrupted promotion", stale)
        shutil.rmtree(stale, ignore_errors=True)
    version = max(versions(base), default=0) + 1
    with atomic_dir(base / str(version)) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        write_json(tmp / "promotion.json", {**record, "version": version})
    return version


def register(work: Work, run_id: str, name: str, version: int, accuracy: float) -> str | None:
    from jobs.tracking import Tracker

    tracker = Tracker()
    candidate = work.candidate(run_id, name)
    info = read_json(candidate.run_info) if candidate.run_info.exists() else {}
    mlflow_run = info.get("mlflow_run_id")
    source = (work.served() / str(version)).resolve().as_uri()
    if mlflow_run:
        run_info = tracker.call("find the candidate's run", lambda: tracker.client.get_run(mlflow_run))
        if run_info is not None:
            source = f"{run_info.info.artifact_uri}/model"
    tags = {"serving_version": str(version), "pipeline_run": run_id, "model": name, "test_accuracy": f"{accuracy:.4f}"}
    registered = tracker.register(MODEL_NAME, mlflow_run, source, ALIAS, tags)
    if registered is not None:
        tracker.set_tags(mlflow_run, {"promoted": "true", "serving_version": str(version)})
    return registered


def promote(work: Work, run_id: str, dataset: str, names: Sequence[str], force: bool) -> dict:
    from jobs import data

    best, accuracy, scores = best_candidate(work, run_id, names)
    test = data.load(work.dataset(dataset), ("test",))["test"]
    base = work.served()
    with locked(base):
        current = max(versions(base), default=None)
        served = served_accuracy(base / str(current), test) if current is not None else None
        decision = decide(accuracy, served, force)
        log.info(
            "best candidate %s (%s): %s", best, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), decision.reason
        )
        result = {
            "run_id": run_id,
            "model": best,
            "accuracy": accuracy,
            "scores": scores,
            "served_version": current,
            "served_accuracy": served,
            "promoted": decision.promote,
            "reason": decision.reason,
            "version": current,
        }
        if decision.promote:
            record = {
                "run_id": run_id,
                "model": best,
                "accuracy": accuracy,
                "dataset": dataset,
                "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            result["version"] = publish(work.candidate(run_id, best).model, base, record)
            serving_config.serve_latest(work)
            log.info("promoted %s as version %d of %s", best, result["version"], base)
    if decision.promote:
        result["registered_version"] = register(work, run_id, best, result["version"], accuracy)
    write_json(work.run(run_id) / "promotion.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p, models.NAMES)
    p.add_argument("--force", action="store_true", help="promote the best even if it does not beat the served one")
    args = p.parse_args(argv)

    result = promote(Work(args.work_dir), args.run_id, args.dataset, args.models, args.force)
    emit(
        model=result["model"],
        accuracy=result["accuracy"],
        promoted=int(result["promoted"]),
        version=result["version"] if result["version"] is not None else "none",
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
