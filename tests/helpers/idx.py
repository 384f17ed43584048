"""Datasets written as the four gzipped idx files of Fashion-MNIST's official distribution,
as `--dataset idx` reads them."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from jobs.ingest import data


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """One idx file: the magic number, the dimensions, the bytes."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_idx_folder(folder: Path, dataset: data.Dataset) -> Path:
    """The four files, named as the official distribution names them."""
    folder.mkdir(parents=True, exist_ok=True)
    for (split, kind), name in data.IDX_FILES.items():
        write_idx(folder / name, getattr(dataset[split], kind), data.IDX_MAGIC[kind])
    return folder
