"""`make predict` samples the dataset the served model was trained on, and a missing dataset
is one line that names the command that works; for a model trained on drawn garments it says
what to expect of one's own images."""

from __future__ import annotations

import pytest

from jobs.core.cli import JobError
from jobs.core.files import write_json
from jobs.core.paths import Work
from jobs.ingest import data
from jobs.predict.predict import sample_dataset, what_it_knows
from tests.helpers.jobs import assert_one_line_error, run_job


@pytest.fixture
def served_synthetic(tmp_path) -> Work:
    """A work dir as `make local DATASET=synthetic` leaves it: synthetic ingested, version 1
    promoted from it (the model files do not matter here)."""
    work = Work(tmp_path / "work")
    data.write(data.synthetic(20, 10, seed=1), work.dataset("synthetic"), {"name": "synthetic"})
    write_json(work.served() / "1" / "promotion.json", {"model": "cnn", "dataset": "synthetic", "run_id": "r"})
    return work


def test_the_served_models_dataset_is_the_default(served_synthetic):
    assert sample_dataset(served_synthetic, "fmnist", None) == "synthetic"


def test_the_only_ingested_dataset_is_the_default_when_nothing_is_served(tmp_path):
    work = Work(tmp_path / "work")
    data.write(data.synthetic(20, 10, seed=1), work.dataset("synthetic"), {"name": "synthetic"})
    assert sample_dataset(work, "fmnist", None) == "synthetic"


def test_a_missing_dataset_names_the_fix(served_synthetic):
    with pytest.raises(JobError, match="served version 1 was trained on synthetic: make predict DATASET=synthetic"):
        sample_dataset(served_synthetic, "fmnist", "fashion_mnist")
    with pytest.raises(JobError, match="nothing is served or ingested"):
        sample_dataset(Work(served_synthetic.root / "elsewhere"), "fmnist", None)


def test_predict_with_a_missing_dataset_is_one_line_before_any_request(served_synthetic):
    # Port 9 (discard) on loopback: nothing is asked of it, the dataset is checked first.
    proc = run_job(
        "predict", "--url", "http://127.0.0.1:9", "--work-dir", served_synthetic.root, "--dataset", "fashion_mnist"
    )
    assert_one_line_error(proc, "make predict DATASET=synthetic")


def test_a_model_trained_on_drawn_garments_says_what_it_knows(served_synthetic, tmp_path):
    assert "samples/*.png, not photographs" in what_it_knows(served_synthetic, "fmnist")
    other = Work(tmp_path / "other")
    write_json(other.served() / "3" / "promotion.json", {"model": "cnn", "dataset": "fashion_mnist", "run_id": "r"})
    assert what_it_knows(other, "fmnist") is None and what_it_knows(Work(tmp_path / "none"), "fmnist") is None
