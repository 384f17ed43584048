"""The validation split: carved from the stored training images by a seeded draw, recorded in
the manifest with every split's size and digest, checked when loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.core.cli import JobError
from jobs.core.paths import Work
from jobs.ingest import data
from tests.helpers.jobs import assert_one_line_error, run_job


def test_the_draw_is_seeded_sized_and_sorted():
    a = data.validation_indices(1000, 0.1, seed=0)
    assert len(a) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(a, data.validation_indices(1000, 0.1, seed=0))
    assert not np.array_equal(a, data.validation_indices(1000, 0.1, seed=1))
    assert len(data.validation_indices(3, 0.01, seed=0)) == 1  # never empty, never all
    with pytest.raises(JobError):
        data.validation_indices(10, 1.0, seed=0)


def test_carving_partitions_the_training_images(small_data):
    carved = data.carve(small_data, {"fraction": 0.2, "seed": 5})
    train, validation = carved["train"], carved["validation"]
    assert len(train.labels) + len(validation.labels) == len(small_data["train"].labels) == 1500
    assert len(validation.labels) == 300
    stored = {img.tobytes() for img in small_data["train"].images}
    seen = [img.tobytes() for img in np.concatenate([train.images, validation.images])]
    assert len(set(seen)) == len(seen) and set(seen) == stored  # disjoint, and all of them
    assert carved["test"] is small_data["test"]


def test_manifest_records_the_splits_and_loading_checks_them(tmp_path, small_data):
    target = tmp_path / "synthetic"
    manifest = data.write(small_data, target, {"name": "synthetic"}, {"fraction": 0.2, "seed": 5})
    assert manifest["validation"] == {"fraction": 0.2, "seed": 5}
    assert {k: v["examples"] for k, v in manifest["splits"].items()} == {"train": 1200, "validation": 300, "test": 500}
    splits, records = data.model_splits(target)
    assert records == manifest["splits"]
    assert np.array_equal(
        splits["validation"].images, data.carve(small_data, manifest["validation"])["validation"].images
    )
    only, _ = data.model_splits(target, ("test",))
    assert list(only) == ["test"]

    # A manifest whose split settings no longer produce its recorded digests is refused.
    changed = {**manifest, "validation": {"fraction": 0.2, "seed": 6}}
    (target / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(JobError, match="validation split .* does not match its manifest"):
        data.model_splits(target, ("validation",))


def test_a_manifest_from_before_validation_splits_gets_the_default(tmp_path, small_data):
    target = tmp_path / "synthetic"
    manifest = data.write(small_data, target, {"name": "synthetic"})
    old = {k: v for k, v in manifest.items() if k not in ("validation", "splits")}
    (target / "manifest.json").write_text(json.dumps(old))
    _, records = data.model_splits(target)
    assert records == manifest["splits"] and manifest["validation"] == data.DEFAULT_VALIDATION


def test_ingest_records_the_split_and_re_ingests_when_it_changes(work):
    small = ("--dataset", "synthetic", "--train-size", "300", "--test-size", "100")
    first = run_job("ingest", "--work-dir", work, *small)
    assert first.returncode == 0 and "validation_examples=30" in first.stdout, first.stderr
    same = run_job("ingest", "--work-dir", work, *small)
    assert "written=0" in same.stdout
    other = run_job("ingest", "--work-dir", work, *small, "--validation-fraction", "0.2", "--split-seed", "3")
    assert "written=1" in other.stdout and "validation_examples=60" in other.stdout
    manifest = json.loads((Work(work).dataset("synthetic") / "manifest.json").read_text())
    assert manifest["validation"] == {"fraction": 0.2, "seed": 3}
    assert_one_line_error(run_job("ingest", "--work-dir", work, *small, "--validation-fraction", "1"), "below 1")
