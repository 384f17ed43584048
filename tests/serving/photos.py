"""Photo-like garments made from the synthetic data: each class's mean image (a clean garment,
light on dark) turned into what a product photo looks like: dark and tinted on a light,
slightly shaded backdrop, scaled, off-centre, noisy, as a JPEG."""

from __future__ import annotations

import io

import numpy as np


def garments(dataset) -> np.ndarray:
    """float32 [10,28,28]: the mean training image of each class, its backdrop taken out, 0-1."""
    images, labels = dataset["train"].images.astype(np.float32), dataset["train"].labels
    means = np.stack([images[labels == c].mean(axis=0) for c in range(10)])
    out = []
    for mean in means:
        border = np.concatenate([mean[0], mean[-1], mean[:, 0], mean[:, -1]])
        level = np.median(border)  # the mean of the clipped noise: the synthetic backdrop
        garment = np.clip((mean - level) / (mean.max() - level), 0, 1)
        out.append(np.clip((garment - 0.1) / 0.9, 0, 1))
    return np.stack(out)


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
