"""Photo-like garments made with the synthetic data's generator: one garment of each class
(light on dark, fitted) turned into what a product photo looks like: dark and tinted on a
light, slightly shaded backdrop, scaled, off-centre, noisy, as a JPEG."""

from __future__ import annotations

import io

import numpy as np


def garments(seed: int = 0) -> np.ndarray:
    """float32 [10,28,28]: one garment of each class as jobs.ingest.garments draws it, without sensor
    noise, stretched to full contrast, 0-1."""
    from jobs.ingest import garments as generator

    drawn = generator.draw(np.arange(10), np.random.default_rng(seed), noise=0.0).astype(np.float32)
    return drawn / drawn.max(axis=(1, 2), keepdims=True)


def photo(garment: np.ndarray, rng: np.random.Generator, light: bool = True) -> bytes:
    from PIL import Image, ImageFilter

    h = int(rng.integers(120, 260))
    w = int(h * rng.uniform(0.8, 1.25))
    big = np.asarray(Image.fromarray((garment * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
    alpha = (big / 255.0)[..., None]
    height, width = int(h * rng.uniform(1.2, 1.8)), int(w * rng.uniform(1.2, 1.8))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    shade = 8 * np.linspace(-1, 1, height)[:, None, None]  # light falling off down the backdrop
    if light:
        backdrop, colour = rng.uniform(215, 250), rng.uniform(20, 140, size=3)
    else:
        backdrop, colour = rng.uniform(5, 40), rng.uniform(150, 250, size=3)
    canvas = np.full((height, width, 3), backdrop, np.float32) + shade
    region = canvas[top : top + h, left : left + w]
    canvas[top : top + h, left : left + w] = region * (1 - alpha) + colour * alpha
    canvas += rng.normal(0, 3, canvas.shape)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(70, 95)))
    return buffer.getvalue()


def fitted(garment: np.ndarray) -> np.ndarray:
    """A garment in Fashion-MNIST's form: cropped to itself, longer side 28, centred, 0-255."""
    from PIL import Image

    rows, cols = np.where(garment.max(axis=1) > 0.1)[0], np.where(garment.max(axis=0) > 0.1)[0]
    crop = garment[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = 28 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.BILINEAR), np.float32)
    out = np.zeros((28, 28), np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out
