"""Distance fields: each shape is the signed distance (negative inside) from points (x, y) to
its edge, computed for a batch at once. Parameters are arrays shaped (n,1,1), one value per
image, and (x, y) are the pixel coordinates of each image, so one call draws n different
shapes. Edges come out antialiased from the distance (jobs.ingest.garments.render.coverage)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np


def poly(x, y, *points):
    """A convex polygon through `points` (either orientation): exact inside and along edges."""
    pairs = list(zip(points, points[1:] + points[:1], strict=True))
    sign = np.sign(sum(ax * by - bx * ay for (ax, ay), (bx, by) in pairs))
    d = None
    for (ax, ay), (bx, by) in pairs:
        # the edge's outward normal (nx, ny) and offset, per image; then one pass over the pixels
        ex, ey = bx - ax, by - ay
        norm = sign / (np.sqrt(ex * ex + ey * ey) + 1e-6)
        nx, ny = ey * norm, -ex * norm
        side = x * nx + y * ny - (ax * nx + ay * ny)
        d = side if d is None else np.maximum(d, side)
    return d


def capsule(x, y, ax, ay, bx, by, r):
    """A segment from (ax, ay) to (bx, by), thickened by r."""
    ex, ey = bx - ax, by - ay
    t = np.clip(((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey + 1e-6), 0.0, 1.0)
    return np.hypot(x - ax - t * ex, y - ay - t * ey) - r


def ellipse(x, y, cx, cy, rx, ry):
    """An ellipse (distance approximate away from the edge, which antialiasing does not see)."""
    return (np.hypot((x - cx) / rx, (y - cy) / ry) - 1.0) * np.minimum(rx, ry)


def ring(x, y, cx, cy, rx, ry, t):
    """The outline of an ellipse, t thick either side."""
    return np.abs(ellipse(x, y, cx, cy, rx, ry)) - t


def union(*shapes):
    return functools.reduce(np.minimum, shapes)


def cut(shape, hole):
    return np.maximum(shape, -hole)


def where(flag, shape, otherwise=np.inf):
    return np.where(flag, shape, otherwise)


class Parts(NamedTuple):
    """What a class draws: the silhouette, the seams (dark lines) and parts in a second tone."""

    body: np.ndarray
    seams: np.ndarray | float = np.inf
    accent: np.ndarray | float = np.inf


class Draws:
    """Per-image random parameters for a batch of n images, shaped (n,1,1) to broadcast over pixels."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n

    def u(self, low, high) -> np.ndarray:
        return self.rng.uniform(low, high, (self.n, 1, 1)).astype(np.float32)

    def p(self, chance: float) -> np.ndarray:
        return self.rng.random((self.n, 1, 1)) < chance

    def angle(self, low_degrees: float, high_degrees: float) -> np.ndarray:
        return np.radians(self.u(low_degrees, high_degrees))


Shape = Callable[..., Parts]  # (x, y, details=True): details=False draws the silhouette only
