"""Sample pictures, one per class, as a user might send them to the served model: the garment
coloured, on a white backdrop with margins (samples/*.png in the repository).

    python -m jobs.ingest.garments.samples [folder]      writes <folder>/<class>.png (default samples)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs.core.cli import parser, run
from jobs.ingest.garments.classes import CLASSES
from jobs.ingest.garments.render import draw

log = logging.getLogger("jobs.garments")

SAMPLES_SEED = 7  # a set where every class looks its part
SAMPLE_COLOURS = np.array(
    [
        (40, 60, 140),
        (70, 90, 120),
        (150, 40, 50),
        (40, 110, 70),
        (90, 70, 50),
        (60, 45, 40),
        (70, 110, 170),
        (40, 40, 50),
        (180, 100, 40),
        (80, 50, 35),
    ],
    np.float32,
)


def sample_name(label: int) -> str:
    return CLASSES[label].draw.__name__.replace("_", "-")


def samples(seed: int = SAMPLES_SEED, side: int = 96, margin: int = 12) -> dict[str, np.ndarray]:
    """One picture of each class as a product photo: the garment coloured, on a white backdrop
    with margins, uint8 [side + 2 margin, side + 2 margin, 3], by file name (`shirt.png`)."""
    light = draw(np.arange(len(CLASSES)), np.random.default_rng(seed), side, noise=0.0).astype(np.float32) / 255
    light = np.pad(light, ((0, 0), (margin, margin), (margin, margin)))
    pictures = 255 - light[..., None] * (255 - SAMPLE_COLOURS[:, None, None, :])
    return {f"{sample_name(label)}.png": np.round(p).astype(np.uint8) for label, p in enumerate(pictures)}


def main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    p = parser("Write one sample picture per class (what the README's examples send).")
    p.add_argument("out", type=Path, nargs="?", default=Path("samples"), help="the folder to write into")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, picture in samples().items():
        temp = args.out / f".{name}.tmp"  # then renamed: a reader never sees half a picture
        Image.fromarray(picture, mode="RGB").save(temp, format="PNG", optimize=True)
        os.replace(temp, args.out / name)
        log.info("wrote %s", args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
