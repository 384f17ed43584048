"""The training recipe on a small real dataset: scikit-learn's 1,797 scanned digits written as
the four idx files, ingested with `--dataset idx` and trained with `python -m jobs.train` as
`make local DATASET=idx EPOCHS=8` trains them (a global batch of 128), against the plain Keras
baseline (bench.baseline) trained in the same test on the same images, batch and steps."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from jobs.core.paths import Work
from jobs.train import models
from tests.helpers import ROOT
from tests.helpers.digits import digits
from tests.helpers.idx import write_idx_folder
from tests.helpers.jobs import job_env, run_job

SEEDS = (0, 1, 2)
EPOCHS = 8
GLOBAL_BATCH = 128  # make local's two workers of 64: one worker of 128 runs the same schedule
TOLERANCE = 0.015  # the bar: within 1.5 points of the baseline, mean over seeds


def train_candidates(work, seed: int) -> dict[str, dict]:
    """The three candidates at once, one process each (one thread): their run.json."""
    procs = {
        model: subprocess.Popen(
            [sys.executable, "-m", "jobs.train", "--work-dir", str(work), "--run-id", f"seed{seed}"]
            + ["--dataset", "idx", "--model", model, "--epochs", str(EPOCHS), "--seed", str(seed)]
            + ["--batch-per-worker", str(GLOBAL_BATCH)],
            cwd=ROOT,
            env=job_env(FMNIST_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in models.NAMES
    }
    for model, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=600)
        finally:
            proc.kill()
        assert proc.returncode == 0, f"{model}: {err[-3000:]}"
    return {model: json.loads(Work(work).candidate(f"seed{seed}", model).run_info.read_text()) for model in procs}


@pytest.mark.slow
def test_on_small_real_data_the_best_candidate_reaches_the_plain_baseline(tmp_path, capsys):
    from bench import baseline
    from jobs.evaluate.evaluate import metrics, predict
    from jobs.ingest import data

    folder = write_idx_folder(tmp_path / "idx", digits(seed=0))
    ingest = run_job("ingest", "--work-dir", tmp_path, "--dataset", "idx", "--idx-dir", folder, timeout=300)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    work = Work(tmp_path)
    splits, _ = data.model_splits(work.dataset("idx"), ("train", "test"))
    steps = EPOCHS * (len(splits["train"].labels) // GLOBAL_BATCH)

    chosen, plain = [], []
    for seed in SEEDS:
        infos = train_candidates(tmp_path, seed)
        assert {info["params"]["total_steps"] for info in infos.values()} == {steps}
        best = max(infos, key=lambda model: infos[model]["val_accuracy"])  # as promotion chooses
        model_dir = work.candidate(f"seed{seed}", best).model
        chosen.append(metrics(predict(model_dir, splits["test"].images), splits["test"].labels)["accuracy"])
        plain.append(baseline.test_accuracy(splits["train"], splits["test"], GLOBAL_BATCH, steps, seed))
    with capsys.disabled():
        print(
            f"\n[recipe] digits, {steps} steps of {GLOBAL_BATCH}: best candidate {np.round(chosen, 4).tolist()} "
            f"(mean {np.mean(chosen):.4f}), plain Keras baseline {np.round(plain, 4).tolist()} "
            f"(mean {np.mean(plain):.4f})"
        )
    assert np.mean(plain) > 0.8, "the baseline did not learn: the comparison would mean nothing"
    assert np.mean(chosen) >= np.mean(plain) - TOLERANCE
