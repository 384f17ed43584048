"""Evaluate candidates on the validation and test splits, through the exact SavedModel that
would be served.

For each candidate: accuracy, loss, per-class precision and recall on both splits
(eval/metrics.json: the test split's figures at the top, the validation split's under
`validation`), which test images it classifies right (eval/test_correct.npy, in the test
split's order: promote pairs it with the served version from there), its training and
validation curves and its test confusion matrix, written beside the candidate and logged to
its MLflow run, the metrics linked to its LoggedModel and to the dataset they were measured
on. For the pipeline run: the candidates compared (per class, and their curves) in
`<work>/runs/<run>/plots/`, logged to the parent run.
Promotion chooses on the validation figures; the test figures are the final score.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs.core.cli import JobError, add_run_arguments, emit, parser
from jobs.core.cpus import configure_threads
from jobs.core.files import atomic_dir, read_json, write_json
from jobs.core.paths import Candidate, Work
from jobs.evaluate import report
from jobs.ingest import data
from jobs.ingest.data import CLASS_NAMES
from jobs.tracking.tracker import Tracker, dataset_inputs
from jobs.train import models, run_info

log = logging.getLogger("jobs.evaluate")


def predict(model_dir: Path, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Class probabilities `[N,10]` from a SavedModel's `pixels` signature."""
    import tensorflow as tf

    from jobs.train import export  # imports TensorFlow: not before the arguments are checked

    try:
        fn = export.load(model_dir).signatures["pixels"]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as err:
        raise JobError(f"cannot load a servable model from {model_dir}: {str(err).splitlines()[0][:200]}") from None
    parts = [
        fn(pixels=tf.constant(images[i : i + batch]))["probabilities"].numpy() for i in range(0, len(images), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(CLASS_NAMES)), np.float32)


def metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy, the confusion matrix and per-class precision and recall."""
    n = len(CLASS_NAMES)
    labels = labels.astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(true_positives / confusion.sum(axis=0))
        recall = np.nan_to_num(true_positives / confusion.sum(axis=1))
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()) if len(labels) else 0.0,
        "examples": int(len(labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r)}
            for name, p, r in zip(CLASS_NAMES, precision, recall, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def correct(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which images the predictions get right, in order."""
    return probabilities.argmax(axis=1) == labels.astype(np.int64)


def write_record(folder: Path, result: dict, right: np.ndarray) -> None:
    """A candidate's evaluation record in `folder` (its eval/): metrics.json and test_correct.npy."""
    write_json(folder / "metrics.json", result)
    np.save(folder / "test_correct.npy", right, allow_pickle=False)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What promote reads of a candidate's evaluation."""

    name: str
    accuracy: float  # on the test split
    validation_accuracy: float
    test_digest: str | None  # the test split it was measured on (jobs.ingest.data.digest)
    correct: np.ndarray  # which test images it classifies right, in the split's order

    @classmethod
    def read(cls, candidate: Candidate, run_id: str) -> Evaluation:
        if not candidate.metrics.exists():
            raise JobError(
                f"candidate {candidate.name} of run {run_id} has not been evaluated ({candidate.metrics} is missing)"
            )
        found = read_json(candidate.metrics)
        if "validation" not in found or not candidate.test_correct.exists():
            raise JobError(
                f"{candidate.eval} has no validation score or test record (written by an older evaluate): "
                "re-run evaluate"
            )
        try:
            right = np.load(candidate.test_correct, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise JobError(f"{candidate.test_correct} is unreadable ({err}): re-run evaluate") from None
        return cls(
            candidate.name,
            float(found["accuracy"]),
            float(found["validation"]["accuracy"]),
            found.get("test_digest"),
            right.astype(bool),
        )


def metric_key(class_name: str) -> str:
    return class_name.replace("/", "_").replace(" ", "_").replace("-", "_").lower()


def evaluate(candidate: Candidate, splits: dict, tracker, datasets: dict, label: str) -> dict:
    """Scores one candidate on the validation and test splits; `label` ("<dataset>, run <run>")
    goes into the plot titles."""
    if not (candidate.model / "saved_model.pb").exists():
        raise JobError(f"candidate {candidate.name} has no model at {candidate.model}: did its training finish?")
    validation, test = splits["validation"], splits["test"]
    probabilities = predict(candidate.model, test.images)
    result = metrics(probabilities, test.labels)
    result["test_digest"] = data.digest(test)
    result["validation"] = metrics(predict(candidate.model, validation.images), validation.labels)
    history = read_json(candidate.history).get("epochs", []) if candidate.history.exists() else []
    with atomic_dir(candidate.eval) as tmp:
        write_record(tmp, result, correct(probabilities, test.labels))
        report.plot_confusion(
            result["confusion_matrix"],
            f"{candidate.name} on {label}: test split, accuracy {result['accuracy']:.4f}",
            tmp / "confusion_matrix.png",
        )
        if history:
            report.plot_curves(history, f"{candidate.name} on {label}", tmp / "training_curves.png")

    info = run_info.read(candidate)
    mlflow_run, model_id = info.get("mlflow_run_id"), info.get("model_id")
    step = max((e["epoch"] for e in history), default=0)
    tracker.log_metrics(
        mlflow_run,
        {"validation_accuracy": result["validation"]["accuracy"], "validation_loss": result["validation"]["loss"]},
        step=step,
        model_id=model_id,
        dataset=datasets.get("validation"),
    )
    flat = {"test_accuracy": result["accuracy"], "test_loss": result["loss"]}
    for name, scores in result["per_class"].items():
        flat[f"test_precision_{metric_key(name)}"] = scores["precision"]
        flat[f"test_recall_{metric_key(name)}"] = scores["recall"]
    tracker.log_metrics(mlflow_run, flat, step=step, model_id=model_id, dataset=datasets.get("test"))
    tracker.log_inputs(mlflow_run, {"test": datasets["test"]} if "test" in datasets else {})
    tracker.log_artifacts(mlflow_run, candidate.eval, "eval")
    return result


def compare(work: Work, run_id: str, results: dict[str, dict], label: str) -> Path:
    """The candidates side by side in `<run>/plots/`: per_class.png and validation_curves.png
    (promote adds candidates.png, with the served version); returns the folder."""
    histories = {}
    for name in results:
        history = work.candidate(run_id, name).history
        histories[name] = read_json(history).get("epochs", []) if history.exists() else []
    recall = {name: {cls: s["recall"] for cls, s in r["per_class"].items()} for name, r in results.items()}
    names = ", ".join(results)
    with atomic_dir(work.plots(run_id)) as tmp:
        report.plot_per_class(recall, f"{names} on {label}:\nper-class test accuracy", tmp / "per_class.png")
        if any(histories.values()):
            report.plot_validation_curves(
                histories, f"{names} on {label}: accuracy per epoch", tmp / "validation_curves.png"
            )
    return work.plots(run_id)


def build_parser() -> argparse.ArgumentParser:
    """The step's flags: their defaults are the pipeline's (jobs.steps reads them)."""
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p, models.NAMES)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    work = Work(args.work_dir)
    folder = work.dataset(args.dataset)
    splits, records = data.model_splits(folder, ("validation", "test"))
    configure_threads()
    tracker = Tracker()
    datasets = dataset_inputs(args.dataset, folder, records, data.read_manifest(folder)["source"])
    label = f"{args.dataset}, run {args.run_id}"
    results = {}
    for name in args.models:
        result = evaluate(work.candidate(args.run_id, name), splits, tracker, datasets, label)
        results[name] = result
        log.info(
            "%s: validation accuracy %.4f, test accuracy %.4f, loss %.4f",
            name,
            result["validation"]["accuracy"],
            result["accuracy"],
            result["loss"],
        )
        emit(
            **{
                f"{name}_validation_accuracy": result["validation"]["accuracy"],
                f"{name}_accuracy": result["accuracy"],
                f"{name}_loss": result["loss"],
            }
        )
    plots = compare(work, args.run_id, results, label)
    parent = tracker.pipeline_run(work, args.run_id, {"dataset": args.dataset})
    tracker.log_inputs(parent, datasets)
    tracker.log_artifacts(parent, plots, "plots")
    return 0
