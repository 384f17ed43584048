"""Garments drawn from seeded parameters, light on black at 28x28 as Fashion-MNIST's are: the
`synthetic` dataset (jobs.ingest.data.synthetic).

Each class is a silhouette made of a few shapes whose sizes are drawn per image: sleeve length,
angle and width, body length and flare, neckline, collar, legs, heel height, straps, handle.
The garment then gets a brightness, a texture (stripes, checks, dots, knit), shading, seams and
a second tone for parts such as soles, collars and prints, and is fitted into the image as
Fashion-MNIST's were, with a random fill, offset, turn and bend. Nothing here was derived from
Fashion-MNIST's pixels. One module per concern:

    shapes       distance fields for a batch: polygons, capsules, ellipses, rings; per-image draws
    clothes      T-shirt/top, trouser, pullover, dress, coat, shirt
    accessories  sandal, sneaker, ankle boot, bag
    classes      the ten in jobs.ingest.data.CLASS_NAMES's order, how often mirrored, their textures
    render       shapes to pixels: texture, fit, shading, seams, noise (`draw`)
    samples      one picture per class as a user would send it (`python -m jobs.ingest.garments.samples`)

`SYNTHETIC_VERSION` names what this package draws. The ingest step records it in a synthetic
dataset's manifest, so a dataset drawn by another version is drawn again; the cluster
workflow's cache key reads it from here. Raise it with any change that changes the pixels
drawn for a seed (tests/unit/test_garments.py holds a digest that notices).
"""

from __future__ import annotations

from jobs.ingest.garments.render import draw

SYNTHETIC_VERSION = 2  # 1: a smooth random blob per class, shifted and noised

__all__ = ["SYNTHETIC_VERSION", "draw"]
