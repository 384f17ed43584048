"""From shapes to pixels: a texture, the fit into the image (as Fashion-MNIST's were fitted:
cropped to the garment, longer side the image's, centred; then a random fill, offset, turn and
bend), shading, seams, a second tone, sensor noise."""

from __future__ import annotations

import numpy as np

from jobs.ingest.garments.classes import CLASSES, TEXTURES
from jobs.ingest.garments.shapes import Draws, Shape

SIDE = 28
CHUNK = 64  # images drawn at once: their arrays stay in the CPU's cache


SOLID, ACROSS, ALONG, CHECKS, DOTS, KNIT = range(len(TEXTURES))


def texture(d: Draws, chances: tuple[float, ...], x, y) -> np.ndarray:
    """A multiplier of 1 - contrast at most, in the garment's own coordinates: one of TEXTURES
    per image, with these chances."""
    kind = np.minimum((d.rng.random((d.n, 1, 1, 1)) > np.cumsum(chances)).sum(-1), KNIT)
    period = np.where(kind == KNIT, d.u(0.12, 0.16), d.u(0.22, 0.45))
    across = (kind == ACROSS) | (kind == DOTS)
    a = np.sin(np.where(across, y, x) * (2 * np.pi / period) + d.u(0, 2 * np.pi))
    b = np.sin(y * (2 * np.pi / period) + d.u(0, 2 * np.pi))
    pattern = np.where(kind == CHECKS, np.maximum(a, b), np.where(kind == DOTS, (a * b > 0.4) * 2.0 - 1.0, a))
    contrast = np.where(kind == SOLID, 0.0, d.u(0.15, 0.5))
    return 1.0 - contrast * 0.5 * (1.0 + pattern)


def coverage(shape, pixel):
    """How much of each pixel a shape covers, from its signed distance (antialiased edges)."""
    return np.clip(0.5 - shape / pixel, 0.0, 1.0)


def bounds(shape: Shape, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (x, y) and half the longer side of each garment, from its distance on a coarse
    grid: the garment reaches beyond a point at signed distance s by -s at least (inside), and
    comes within s of it (outside). Points within a grid step of the garment, so that no
    strap thinner than a step is missed, and none so far that a distance estimate misleads."""
    grid = np.linspace(-1.5, 1.5, 25, dtype=np.float32)
    x, y = grid[None, None, :], grid[None, :, None]
    body = np.broadcast_to(shape(x, y, details=False).body, (n, grid.size, grid.size))
    near = body < grid[1] - grid[0]
    left = np.where(near, x + body, np.inf).min(axis=(1, 2))
    right = np.where(near, x - body, -np.inf).max(axis=(1, 2))
    top = np.where(near, y + body, np.inf).min(axis=(1, 2))
    bottom = np.where(near, y - body, -np.inf).max(axis=(1, 2))
    half = np.maximum(right - left, bottom - top) / 2
    return ((left + right) / 2).reshape(n, 1, 1), ((top + bottom) / 2).reshape(n, 1, 1), half.reshape(n, 1, 1)


def draw_class(label: int, n: int, rng: np.random.Generator, side: int = SIDE, noise: float = 0.015) -> np.ndarray:
    """n images of one class, float32 [n, side, side] in 0-1, with sensor noise of this deviation."""
    d, garment = Draws(rng, n), CLASSES[label]
    shape = garment.draw(d)
    cx, cy, half = bounds(shape, n)
    fill, turn = d.u(0.85, 1.0), d.angle(-7, 7)
    shift_x, shift_y = d.u(-0.07, 0.07), d.u(-0.07, 0.07)
    flip = np.where(d.p(garment.mirrored), -1.0, 1.0)
    # canvas coordinates in [-1, 1], then into the garment's own: rotate, scale, centre
    grid = ((np.arange(side, dtype=np.float32) + 0.5) / side) * 2 - 1
    u, v = grid[None, None, :] - shift_x, grid[None, :, None] - shift_y
    scale = half / fill
    x = flip * (np.cos(turn) * u + np.sin(turn) * v) * scale + cx
    y = (-np.sin(turn) * u + np.cos(turn) * v) * scale + cy
    # stroke noise: a gentle, random bend of the whole drawing
    bend, freq = d.u(0.0, 0.035), d.u(2.5, 8.0)
    x, y = x + bend * np.sin(freq * y + d.u(0, 6.3)), y + bend * np.sin(freq * x + d.u(0, 6.3))
    pixel = 2.0 / side * scale
    parts = shape(x, y)
    body = coverage(parts.body, pixel)
    level = 0.25 + 0.75 * np.sqrt(d.u(0, 1))
    accent_level = np.clip(level * d.u(0.55, 1.5), 0.15, 1.0)
    light = 1.0 - d.u(0.0, 0.35) * (0.5 + 0.5 * np.sin(x * d.u(-1.5, 1.5) + y * d.u(-1.5, 1.5)))
    image = body * level * texture(d, garment.textures, x, y)
    accent = coverage(parts.accent, pixel) * body
    image = image * (1.0 - accent) + accent * accent_level
    image = image * light * (1.0 - d.u(0.35, 1.0) * coverage(parts.seams, pixel))
    image = soften(image, d.u(0.0, 0.7))
    return np.clip(image + rng.normal(0.0, noise, image.shape), 0.0, 1.0).astype(np.float32)


def soften(images: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Each image mixed with its 3x3 box blur by `amount`: pictures shrunk from larger ones,
    as every decoded photo is, are never as crisp as ones drawn at their size."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    side_y, side_x = images.shape[1:]
    blurred = sum(padded[:, dy : dy + side_y, dx : dx + side_x] for dy in range(3) for dx in range(3)) / 9.0
    return images * (1.0 - amount) + blurred * amount


def draw(labels: np.ndarray, rng: np.random.Generator, side: int = SIDE, noise: float = 0.015) -> np.ndarray:
    """One garment per label (class ids 0-9), uint8 [N, side, side], light on black."""
    labels = np.asarray(labels)
    images = np.zeros((len(labels), side, side), np.uint8)
    for label in range(len(CLASSES)):
        where_label = np.flatnonzero(labels == label)
        for start in range(0, len(where_label), CHUNK):
            chunk = where_label[start : start + CHUNK]
            images[chunk] = np.round(draw_class(label, len(chunk), rng, side, noise) * 255).astype(np.uint8)
    return images
