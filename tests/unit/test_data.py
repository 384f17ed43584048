"""The three data sources, the stored format, and the ingest job."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from jobs.core.cli import JobError
from jobs.core.paths import Work
from jobs.ingest import data
from tests.helpers.idx import write_idx, write_idx_folder
from tests.helpers.jobs import assert_one_line_error, run_job

# --- synthetic -----------------------------------------------------------------------------


def test_synthetic_has_fashion_mnist_shapes_and_classes():
    d = data.synthetic(train_size=600, test_size=200)
    assert set(d) == {"train", "test"}
    for split, n in (("train", 600), ("test", 200)):
        assert d[split].images.shape == (n, 28, 28) and d[split].images.dtype == np.uint8
        assert d[split].labels.shape == (n,) and d[split].labels.dtype == np.uint8
        assert np.bincount(d[split].labels, minlength=10).tolist() == [n // 10] * 10
    assert len(data.CLASS_NAMES) == 10 and data.CLASS_NAMES[0] == "T-shirt/top"


def test_synthetic_is_deterministic_per_seed():
    a, b, c = data.synthetic(300, 100, seed=7), data.synthetic(300, 100, seed=7), data.synthetic(300, 100, seed=8)
    for split in ("train", "test"):
        assert np.array_equal(a[split].images, b[split].images)
        assert np.array_equal(a[split].labels, b[split].labels)
    assert not np.array_equal(a["train"].images, c["train"].images)


def test_synthetic_is_learnable_but_not_trivial():
    """A nearest-class-mean classifier fitted on train scores far above chance on test."""
    d = data.synthetic(2000, 500, seed=1)
    x, y = d["train"].images.reshape(2000, -1).astype(float), d["train"].labels
    means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    test = d["test"].images.reshape(500, -1).astype(float)
    predicted = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = (predicted == d["test"].labels).mean()
    assert accuracy > 0.5, accuracy
    # Images of one class are not identical.
    assert len({img.tobytes() for img in d["train"].images[y == 0]}) == (y == 0).sum()


# --- idx -----------------------------------------------------------------------------------


def test_idx_reads_the_official_layout(tmp_path, small_data):
    write_idx_folder(tmp_path, small_data)
    loaded = data.from_idx(tmp_path)
    for split in ("train", "test"):
        assert np.array_equal(loaded[split].images, small_data[split].images)
        assert np.array_equal(loaded[split].labels, small_data[split].labels)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"not gzip at all"), "not a readable gzip"),
        (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100])), "header says"),
        (lambda p: p.write_bytes(gzip.compress(struct.pack(">I", 1234) + b"\0" * 20)), "magic number 1234"),
        (lambda p: p.unlink(), "not found"),
    ],
    ids=["not-gzip", "truncated", "bad-magic", "missing"],
)
def test_idx_refuses_damaged_files(tmp_path, small_data, damage, message):
    write_idx_folder(tmp_path, small_data)
    damage(tmp_path / data.IDX_FILES[("train", "images")])
    with pytest.raises(JobError, match=message):
        data.from_idx(tmp_path)


def test_idx_refuses_mismatched_counts(tmp_path, small_data):
    write_idx_folder(tmp_path, small_data)
    write_idx(tmp_path / data.IDX_FILES[("test", "labels")], small_data["test"].labels[:10], 2049)
    with pytest.raises(JobError, match="images but 10 labels"):
        data.from_idx(tmp_path)


# --- tensorflow-datasets ---------------------------------------------------------------------


def test_tfds_source_with_mocked_download(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    probed = []
    monkeypatch.setattr(data, "probe", probed.append)  # the mock downloads nothing
    with tfds.testing.mock_data(num_examples=40):
        loaded = data.from_tfds(tmp_path)
    for split in ("train", "test"):
        assert loaded[split].images.shape[1:] == (28, 28) and loaded[split].images.dtype == np.uint8
        assert len(loaded[split].images) == len(loaded[split].labels) > 0
        assert loaded[split].labels.max() < 10
    assert probed and probed[0].startswith("http")


def test_unreachable_download_host_fails_fast_with_the_alternatives():
    with pytest.raises(JobError) as err:
        data.probe("http://127.0.0.1:9/", timeout=5)
    assert "127.0.0.1:9" in str(err.value) and "DATASET=synthetic" in str(err.value)


def test_tfds_failure_names_the_offline_alternatives(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "load", offline)
    monkeypatch.setattr(data, "probe", lambda url: None)
    with pytest.raises(JobError) as err:
        data.from_tfds(tmp_path)
    text = str(err.value)
    assert "storage.googleapis.com" in text and "DATASET=synthetic" in text and "DATASET=idx" in text
    assert "\n" not in text


# --- storage ---------------------------------------------------------------------------------


def test_written_dataset_loads_and_detects_tampering(tmp_path, small_data):
    target = tmp_path / "synthetic"
    manifest = data.write(small_data, target, {"name": "synthetic"})
    assert manifest["counts"] == {"train": 1500, "test": 500}
    assert sorted(p.name for p in target.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"
    loaded = data.load(target)
    assert np.array_equal(loaded["test"].images, small_data["test"].images)

    images = np.load(target / "test_images.npy")
    images[0, 0, 0] ^= 1
    np.save(target / "test_images.npy", images)
    with pytest.raises(JobError, match="does not match its manifest"):
        data.load(target)


def test_failed_write_leaves_nothing(tmp_path, small_data, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data, "write_json", boom)
    with pytest.raises(OSError):
        data.write(small_data, tmp_path / "synthetic", {"name": "synthetic"})
    assert list(tmp_path.iterdir()) == []


# --- the ingest job --------------------------------------------------------------------------

SMALL = ("--train-size", "300", "--test-size", "100")


def test_ingest_is_idempotent_and_replaces_other_settings(work):
    first = run_job("ingest", "--work-dir", work, "--dataset", "synthetic", *SMALL)
    assert first.returncode == 0, first.stderr
    assert "written=1" in first.stdout and "train_examples=300" in first.stdout
    manifest_path = Work(work).dataset("synthetic") / "manifest.json"
    stamp = manifest_path.stat().st_mtime_ns

    again = run_job("ingest", "--work-dir", work, "--dataset", "synthetic", *SMALL)
    assert again.returncode == 0 and "written=0" in again.stdout
    assert manifest_path.stat().st_mtime_ns == stamp

    other = run_job("ingest", "--work-dir", work, "--dataset", "synthetic", "--train-size", "200", "--test-size", "100")
    assert other.returncode == 0 and "written=1" in other.stdout
    assert json.loads(manifest_path.read_text())["counts"]["train"] == 200
    assert [p.name for p in (work / "data").iterdir()] == ["synthetic"]


def test_ingest_idx_from_the_work_dir(work, small_data):
    write_idx_folder(Work(work).idx, small_data)
    proc = run_job("ingest", "--work-dir", work, "--dataset", "idx")
    assert proc.returncode == 0, proc.stderr
    assert "train_examples=1500" in proc.stdout
    assert np.array_equal(data.load(Work(work).dataset("idx"))["train"].labels, small_data["train"].labels)


def test_ingest_corrupt_idx_is_one_line_and_writes_nothing(work, small_data):
    write_idx_folder(Work(work).idx, small_data)
    (Work(work).idx / data.IDX_FILES[("test", "labels")]).write_bytes(b"\x1f\x8b garbage")
    proc = run_job("ingest", "--work-dir", work, "--dataset", "idx")
    assert_one_line_error(proc, "t10k-labels-idx1-ubyte.gz")
    assert not (work / "data").exists()


def test_ingest_missing_idx_folder(work):
    proc = run_job("ingest", "--work-dir", work, "--dataset", "idx", "--idx-dir", work / "nowhere")
    assert_one_line_error(proc, "does not exist", "train-images-idx3-ubyte.gz")
    assert not (work / "data").exists()


def test_ingest_rejects_unknown_source(work):
    proc = run_job("ingest", "--work-dir", work, "--dataset", "cifar")
    assert_one_line_error(proc, "invalid choice: 'cifar'")
