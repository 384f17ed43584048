"""Fashion-MNIST from three sources, stored once as plain arrays with a manifest.

A stored dataset is a folder holding `{train,test}_{images,labels}.npy` (uint8 images
`[N,28,28]`, uint8 labels `[N]`) and `manifest.json` (source, its settings, counts, class
names and a SHA-256 of every array). Loading checks the manifest, so a damaged or partial
dataset is refused rather than trained on.

The models see three splits (`model_splits`): a validation split carved from the stored
training images by a seeded draw (the manifest's `validation`: fraction and seed), the rest of
them for training, and the test split as stored. Candidates are compared on the validation
split, so selection never looks at the test split; the manifest's `splits` give each one's
size and digest (what MLflow shows as the dataset inputs).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jobs.core.cli import JobError
from jobs.core.files import atomic_dir, read_json, write_json
from jobs.ingest import garments

log = logging.getLogger("jobs.data")

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Where the images come from (jobs.ingest --dataset): the dataset names of the pipeline.
SOURCES = ("fashion_mnist", "idx", "synthetic")
SPLITS = ("train", "test")
MODEL_SPLITS = ("train", "validation", "test")
IMAGE_SHAPE = (28, 28)
FORMAT_VERSION = 1
# The validation split: this fraction of the stored training images, drawn with this seed.
DEFAULT_VALIDATION = {"fraction": 0.1, "seed": 0}

# The four files of the official distribution, as `idx` expects them in one folder.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
IDX_MAGIC = {"images": 2051, "labels": 2049}

OFFLINE_HELP = (
    "This machine could not download Fashion-MNIST. Offline alternatives: "
    "DATASET=synthetic (make local DATASET=synthetic, or --dataset synthetic) trains on "
    "generated images of the same shape and classes; DATASET=idx (make local DATASET=idx, or "
    "--dataset idx) reads the four official *-ubyte.gz files that you copy into <work-dir>/idx/ "
    "(or name with --idx-dir)."
)


class Split(NamedTuple):
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # uint8 [N]


Dataset = dict[str, Split]


# --- sources -----------------------------------------------------------------------------


def synthetic(train_size: int = 12_000, test_size: int = 2_000, seed: int = 0) -> Dataset:
    """Garments drawn from seeded parameters (jobs.ingest.garments), as many of each class, in a
    seeded order: the same seed and sizes give the same images."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> Split:
        labels = np.arange(n) % len(CLASS_NAMES)
        rng.shuffle(labels)
        return Split(garments.draw(labels, rng), labels.astype(np.uint8))

    return {"train": make(train_size), "test": make(test_size)}


def from_tfds(data_dir: Path, download: bool = True) -> Dataset:
    """Fashion-MNIST through tensorflow-datasets (downloads into `data_dir` on first use)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("fashion_mnist", data_dir=str(data_dir))
    if download and not builder.is_prepared():
        probe(type(builder).URL)
    try:
        loaded = tfds.load(
            "fashion_mnist",
            split=list(SPLITS),
            as_supervised=True,
            data_dir=str(data_dir),
            download=download,
        )
        dataset = {split: _collect(ds) for split, ds in zip(SPLITS, loaded, strict=True)}
    except Exception as err:  # tfds raises many kinds for one cause: no network, no files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JobError(f"tensorflow-datasets failed ({reason[:200]}). {OFFLINE_HELP}") from None
    return dataset


def probe(url: str, timeout: float = 10.0) -> None:
    """Fails fast, with the offline alternatives, when the download host is unreachable
    (tensorflow-datasets itself retries every file for minutes first)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if any(os.environ.get(name) for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")):
        return  # behind a proxy a direct connection proves nothing; let the download try
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise JobError(f"cannot reach {parts.hostname}:{port} ({err}). {OFFLINE_HELP}") from None


def _collect(ds) -> Split:
    """A tf.data split of (image [28,28,1], label) pairs as two arrays. Batches of a fixed size
    rather than `batch_size=-1`, which reads the split size from metadata (absent in mocks)."""
    import tensorflow_datasets as tfds

    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(10_000)):
        images.append(x.reshape(-1, *IMAGE_SHAPE).astype(np.uint8))
        labels.append(y.astype(np.uint8))
    return Split(np.concatenate(images), np.concatenate(labels))


def from_idx(folder: Path) -> Dataset:
    """The official `*-ubyte.gz` files, for machines with no network."""
    if not folder.is_dir():
        raise JobError(f"idx folder {folder} does not exist (it should hold {', '.join(IDX_FILES.values())})")
    arrays = {key: read_idx(folder / name, IDX_MAGIC[key[1]]) for key, name in IDX_FILES.items()}
    dataset = {}
    for split in SPLITS:
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise JobError(f"{IDX_FILES[(split, 'images')]}: images are {images.shape[1:]}, expected 28x28")
        if len(images) != len(labels):
            raise JobError(f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise JobError(f"{IDX_FILES[(split, 'labels')]}: label {labels.max()} out of range 0-9")
        dataset[split] = Split(images, labels)
    return dataset


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parses one gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise JobError(f"{path} not found") from None
    except (OSError, EOFError) as err:
        raise JobError(f"{path} is not a readable gzip file: {err}") from None
    if len(raw) < 8:
        raise JobError(f"{path} is truncated: {len(raw)} bytes")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise JobError(f"{path} has magic number {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise JobError(f"{path} holds {len(raw) - header} bytes of data, its header says {expected}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


# --- storage -----------------------------------------------------------------------------


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def digest(split: Split) -> str:
    """A short fingerprint of one split's images and labels together (MLflow's dataset digest)."""
    hasher = hashlib.sha256()
    for array in split:
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()[:12]


def validation_indices(count: int, fraction: float, seed: int) -> np.ndarray:
    """Which of `count` training images form the validation split: a seeded draw, ascending."""
    if not 0.0 < fraction < 1.0:
        raise JobError(f"the validation fraction must be between 0 and 1, not {fraction}")
    size = min(count - 1, max(1, round(count * fraction)))
    return np.sort(np.random.default_rng(seed).permutation(count)[:size])


def carve(dataset: Dataset, validation: dict) -> Dataset:
    """The models' splits: the stored training images less the validation draw, the validation
    draw, and the stored test split (when `dataset` holds it)."""
    train = dataset["train"]
    held_out = np.zeros(len(train.labels), bool)
    held_out[validation_indices(len(train.labels), validation["fraction"], validation["seed"])] = True
    carved = {
        "train": Split(train.images[~held_out], train.labels[~held_out]),
        "validation": Split(train.images[held_out], train.labels[held_out]),
    }
    if "test" in dataset:
        carved["test"] = dataset["test"]
    return carved


def describe(splits: Dataset) -> dict:
    """Size and digest of every split, as the manifest records them."""
    return {name: {"examples": int(len(split.labels)), "digest": digest(split)} for name, split in splits.items()}


def manifest_for(dataset: Dataset, source: dict, validation: dict | None = None) -> dict:
    validation = {**DEFAULT_VALIDATION, **(validation or {})}
    files = {}
    for split, (images, labels) in dataset.items():
        files[f"{split}_images.npy"] = {"shape": list(images.shape), "sha256": sha256(images)}
        files[f"{split}_labels.npy"] = {"shape": list(labels.shape), "sha256": sha256(labels)}
    return {
        "format": FORMAT_VERSION,
        "source": source,
        "class_names": list(CLASS_NAMES),
        "counts": {split: int(len(dataset[split].labels)) for split in SPLITS},
        "files": files,
        "validation": validation,
        "splits": describe(carve(dataset, validation)),
    }


def write(dataset: Dataset, target: Path, source: dict, validation: dict | None = None) -> dict:
    """Writes the dataset to `target` atomically and returns its manifest."""
    manifest = manifest_for(dataset, source, validation)
    with atomic_dir(target) as tmp:
        for split, (images, labels) in dataset.items():
            np.save(tmp / f"{split}_images.npy", images, allow_pickle=False)
            np.save(tmp / f"{split}_labels.npy", labels, allow_pickle=False)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def read_manifest(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    return read_json(path) if path.exists() else None


def load(folder: Path, splits: tuple[str, ...] = SPLITS, verify: bool = True) -> Dataset:
    """Loads a stored dataset, checking it against its manifest."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise JobError(
            f"no dataset at {folder}: run the ingest step first (python -m jobs.ingest --dataset {folder.name} ...)"
        )
    dataset = {}
    for split in splits:
        arrays = []
        for kind in ("images", "labels"):
            name = f"{split}_{kind}.npy"
            try:
                array = np.load(folder / name, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise JobError(f"{folder / name} is unreadable ({err}); re-run ingest") from None
            expected = manifest["files"][name]
            if list(array.shape) != expected["shape"] or (verify and sha256(array) != expected["sha256"]):
                raise JobError(f"{folder / name} does not match its manifest; re-run ingest")
            arrays.append(array)
        dataset[split] = Split(*arrays)
    return dataset


def model_splits(folder: Path, splits: tuple[str, ...] = MODEL_SPLITS) -> tuple[Dataset, dict]:
    """The splits the models see (train less validation, validation, test), checked against the
    manifest, and each one's record there: `{name: {"examples": N, "digest": "..."}}`.

    A manifest written before validation splits existed carves with DEFAULT_VALIDATION."""
    stored = load(folder, tuple(s for s in SPLITS if s in splits or (s == "train" and "validation" in splits)))
    manifest = read_manifest(folder)
    carved = carve(stored, manifest.get("validation", DEFAULT_VALIDATION)) if "train" in stored else stored
    found = describe({name: carved[name] for name in splits})
    recorded = manifest.get("splits", {})
    for name in splits:
        if name in recorded and recorded[name] != found[name]:
            raise JobError(f"the {name} split of {folder} does not match its manifest; re-run ingest")
    return {name: carved[name] for name in splits}, found


# --- input pipeline ----------------------------------------------------------------------


def to_model_input(images):
    """uint8 `[N,28,28]` → float32 `[N,28,28,1]` in [0, 1]: the one preprocessing used by
    training, evaluation and both serving signatures."""
    import tensorflow as tf

    return tf.expand_dims(tf.cast(images, tf.float32) / 255.0, -1)


def training_pipeline(split: Split, global_batch: int, seed: int = 0):
    """An endless, shuffled, batched tf.data pipeline, sharded by data across workers.

    The shuffle buffer holds the whole split (uint8 images: 42 MB for Fashion-MNIST's 54,000),
    so every epoch is a uniform permutation of every image, not a local mix of neighbours. Each
    worker runs the same seeded pipeline and keeps its share of each global batch (auto-sharding
    by data), so together the workers train on one process's batches: the same seed, the same order."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels.astype(np.int64)))
    ds = ds.cache().shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(global_batch, drop_remainder=True)
    ds = ds.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def evaluation_pipeline(split: Split, global_batch: int):
    """One pass over a split in order, batched (the last batch may be short), sharded by data."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels.astype(np.int64))).cache()
    ds = ds.batch(global_batch).map(lambda x, y: (to_model_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
