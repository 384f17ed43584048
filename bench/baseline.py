"""The plain Keras baseline a user would compare the candidates with: the Keras examples' small
MNIST convnet (two convolutions, dropout, softmax), one process, Adam at a constant 1e-3, on the
same training images, batch and number of steps as a candidate. What it scores on the test
split is the bar the recipe (jobs.train.recipe) must reach on any dataset.

    python -m bench.baseline --work-dir W --dataset D --batch B --steps N --out result.json

bench.e2e and bench.accuracy run it beside each `jobs.local` run, at the candidates' global
batch and planned steps (their run.json), and report each candidate's test accuracy minus
the baseline's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.processes import child_env, run_group
from bench.results import Figures
from jobs.core.cli import parser, positive_int
from jobs.core.files import read_json, write_json
from jobs.core.paths import Work
from jobs.ingest import data

RATE = 1e-3  # Adam's default, constant


def model():
    """Conv(32) → pool → Conv(64) → pool → flatten → dropout 0.5 → softmax."""
    import tf_keras as keras
    from tf_keras import layers

    return keras.Sequential(
        [
            keras.Input((*data.IMAGE_SHAPE, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(len(data.CLASS_NAMES), activation="softmax"),
        ]
    )


def test_accuracy(train: data.Split, test: data.Split, batch: int, steps: int, seed: int = 0) -> float:
    """Trains the baseline for `steps` steps of `batch` images of `train` (the same shuffled
    pipeline as the candidates') and returns its accuracy on `test`."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    baseline = model()
    baseline.compile(keras.optimizers.Adam(RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    baseline.fit(data.training_pipeline(train, batch, seed=seed), epochs=1, steps_per_epoch=steps, verbose=0)
    _, accuracy = baseline.evaluate(data.evaluation_pipeline(test, batch), verbose=0)
    return float(accuracy)


def compare(figures: Figures, work: Work, run_id: str, dataset: str, result: dict, key: str, what: str) -> None:
    """Trains the baseline on `work`'s copy of `dataset` as the run's candidates trained (their
    global batch and planned steps) and adds its test accuracy and each candidate's difference
    from it (`result`: bench.e2e.run_local's) under `key`."""
    trained = [work.candidate(run_id, name).run_info for name in result["accuracy"]]
    if not trained:
        return
    params = read_json(trained[0])["params"]
    out = work.root / "baseline.json"
    argv = [sys.executable, "-m", "bench.baseline", "--work-dir", str(work.root), "--dataset", dataset]
    argv += ["--batch", str(params["global_batch"]), "--steps", str(params["total_steps"]), "--out", str(out)]
    run_group([(argv, child_env())], work.root / "bench-logs", f"{run_id}-baseline", 1800)
    baseline = read_json(out)["accuracy"]
    steps = f"{params['total_steps']} steps of {params['global_batch']}"
    label = f"{what} test accuracy: plain Keras CNN, constant rate, {steps}"
    figures.add(f"{key}.baseline", label, "fraction", baseline)
    for model, accuracy in result["accuracy"].items():
        figures.add(
            f"{key}.vs_baseline.{model}", f"{what}: {model} minus the baseline", "points", 100 * (accuracy - baseline)
        )


def build_parser() -> argparse.ArgumentParser:
    p = parser("Train the plain Keras baseline on an ingested dataset and score it on its test split.")
    p.prog = "python -m bench.baseline"
    p.add_argument("--work-dir", type=Path, required=True, help="holds data/<dataset>, as ingest wrote it")
    p.add_argument("--dataset", choices=data.SOURCES, required=True, help="the ingested dataset")
    p.add_argument("--batch", type=positive_int, required=True, help="images per step")
    p.add_argument("--steps", type=positive_int, required=True, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="initial weights, dropout and shuffling")
    p.add_argument("--out", type=Path, required=True, help='the result as JSON: {"accuracy": ...}')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    splits, _ = data.model_splits(Work(args.work_dir).dataset(args.dataset), ("train", "test"))
    accuracy = test_accuracy(splits["train"], splits["test"], args.batch, args.steps, args.seed)
    write_json(args.out, {"accuracy": accuracy, "batch": args.batch, "steps": args.steps, "seed": args.seed})
    return 0


if __name__ == "__main__":
    from jobs.core.cli import run

    sys.exit(run(main))
