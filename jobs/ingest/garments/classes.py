"""The ten classes in the order of jobs.ingest.data.CLASS_NAMES: who draws each, how often it is
mirrored and which textures it wears."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jobs.ingest.garments.accessories import ankle_boot, bag, sandal, sneaker
from jobs.ingest.garments.clothes import coat, dress, pullover, shirt, trouser, tshirt
from jobs.ingest.garments.shapes import Draws, Shape

# The textures, by index into Garment.textures.
TEXTURES = ("solid", "stripes across", "stripes along", "checks", "dots", "knit")


class Garment(NamedTuple):
    draw: Callable[[Draws], Shape]
    mirrored: float  # how often drawn mirrored: shoes point left, as in Fashion-MNIST
    textures: tuple[float, ...]  # how often each of TEXTURES


CLASSES = (
    Garment(tshirt, 0.5, (0.55, 0.2, 0.05, 0.05, 0.05, 0.1)),
    Garment(trouser, 0.5, (0.7, 0.0, 0.1, 0.05, 0.0, 0.15)),
    Garment(pullover, 0.5, (0.45, 0.15, 0.05, 0.05, 0.0, 0.3)),
    Garment(dress, 0.5, (0.5, 0.1, 0.05, 0.1, 0.2, 0.05)),
    Garment(coat, 0.5, (0.7, 0.0, 0.05, 0.1, 0.0, 0.15)),
    Garment(sandal, 0.08, (0.9, 0.0, 0.0, 0.0, 0.0, 0.1)),
    Garment(shirt, 0.5, (0.35, 0.1, 0.15, 0.35, 0.0, 0.05)),
    Garment(sneaker, 0.08, (0.8, 0.0, 0.0, 0.0, 0.05, 0.15)),
    Garment(bag, 0.5, (0.7, 0.05, 0.05, 0.1, 0.05, 0.05)),
    Garment(ankle_boot, 0.08, (0.85, 0.0, 0.0, 0.0, 0.0, 0.15)),
)
