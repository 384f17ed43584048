"""Evaluate candidates on the test split, through the exact SavedModel that would be served.

For each candidate: accuracy, loss, per-class precision and recall (eval/metrics.json), a
confusion-matrix PNG and training curves, written beside the candidate and logged to its
MLflow run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs import models
from jobs.common import (
    JobError,
    add_run_arguments,
    atomic_dir,
    configure_threads,
    emit,
    parser,
    read_json,
    run,
    write_json,
)
from jobs.data import CLASS_NAMES
from jobs.paths import Candidate, Work

log = logging.getLogger("jobs.evaluate")


def predict(model_dir: Path, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Class probabilities `[N,10]` from a SavedModel's `pixels` signature."""
    import tensorflow as tf

    from jobs import export

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


def plot_confusion(confusion: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(
        xticks=range(len(CLASS_NAMES)), yticks=range(len(CLASS_NAMES)), xlabel="predicted", ylabel="true", title=title
    )
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticklabels(CLASS_NAMES)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] + 1 for e in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [e.get("loss", np.nan) for e in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title=title)
    right.plot(epochs, [e.get("accuracy", np.nan) for e in history], marker="o")
    right.set(xlabel="epoch", ylabel="training accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(candidate: Candidate, images: np.ndarray, labels: np.ndarray, tracker) -> dict:
    if not (candidate.model / "saved_model.pb").exists():
        raise JobError(f"candidate {candidate.name} has no model at {candidate.model}: did its training finish?")
    result = metrics(predict(candidate.model, images), labels)
    history = read_json(candidate.history).get("epochs", []) if candidate.history.exists() else []
    with atomic_dir(candidate.eval) as tmp:
        write_json(tmp / "metrics.json", result)
        plot_confusion(
            result["confusion_matrix"],
            f"{candidate.name}: accuracy {result['accuracy']:.4f}",
            tmp / "confusion_matrix.png",
        )
        if history:
            plot_curves(history, candidate.name, tmp / "training_curves.png")
    info = read_json(candidate.run_info) if candidate.run_info.exists() else {}
    mlflow_run = info.get("mlflow_run_id")
    flat = {"test_accuracy": result["accuracy"], "test_loss": result["loss"]}
    for name, scores in result["per_class"].items():
        key = name.replace("/", "_").replace(" ", "_").replace("-", "_").lower()
        flat[f"test_precision_{key}"] = scores["precision"]
        flat[f"test_recall_{key}"] = scores["recall"]
    tracker.log_metrics(mlflow_run, flat)
    tracker.log_artifacts(mlflow_run, candidate.eval, "eval")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p, models.NAMES)
    args = p.parse_args(argv)

    from jobs import data
    from jobs.tracking import Tracker

    work = Work(args.work_dir)
    test = data.load(work.dataset(args.dataset), ("test",))["test"]
    configure_threads()
    tracker = Tracker()
    for name in args.models:
        result = evaluate(work.candidate(args.run_id, name), test.images, test.labels, tracker)
        log.info("%s: test accuracy %.4f, loss %.4f", name, result["accuracy"], result["loss"])
        emit(**{f"{name}_accuracy": result["accuracy"], f"{name}_loss": result["loss"]})
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
