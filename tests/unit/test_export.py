"""The served signature's batched decoding (jobs.train.export.decode_batch) against the
one-image rule it stands for (`decode`): the same pixels for every kind of image, in order,
whichever path each image takes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jobs.core.png import encode
from jobs.train import export

rng = np.random.default_rng(7)


def pil(array: np.ndarray, mode: str | None, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, fmt, **options)
    return buffer.getvalue()


def garment(background: int, noise: int = 0) -> np.ndarray:
    """A 28x28 grey image: a block on a background, the border's values within `noise`."""
    pixels = np.clip(background + rng.integers(-noise, noise + 1, (28, 28)), 0, 255).astype(np.uint8)
    pixels[6:22, 8:20] = 255 - background
    return pixels


def border_spread_near(limit: float) -> np.ndarray:
    """Dark background 10 with border pixels off by about `limit` on average."""
    pixels = garment(10)
    border = np.zeros(108, np.uint8) + 10
    border[: int(108 * limit / 48)] += 48  # mean absolute deviation from the median 10
    pixels[0, :], pixels[-1, :], pixels[1:-1, 0], pixels[1:-1, -1] = (
        border[:28],
        border[28:56],
        border[56:82],
        border[82:],
    )
    return pixels


GREY_28 = {
    "dark plain": encode(garment(0)),
    "light plain": encode(garment(250)),
    "light, a little noise": encode(garment(230, noise=10)),
    "noise (not plain)": encode(rng.integers(0, 256, (28, 28)).astype(np.uint8)),
    "median at 127 (dark)": encode(np.pad(np.full((26, 26), 200, np.uint8), 1, constant_values=127)),
    "median at 128 (light)": encode(np.pad(np.full((26, 26), 20, np.uint8), 1, constant_values=128)),
    "spread near the limit": encode(border_spread_near(export.PLAIN_BORDER)),
    "by PIL": pil(garment(240), "L"),
}
OTHERS = {
    "RGB 28x28": pil(np.stack([garment(240)] * 3, axis=-1), "RGB"),
    "grey with transparency": pil(garment(240), "L", transparency=240),
    "grey with a pHYs chunk": pil(garment(240), "L", dpi=(72, 72)),
    "16-bit grey": pil(garment(240).astype(np.uint16) * 257, None),
    "JPEG 28x28": pil(garment(240), "L", "JPEG", quality=95),
    "GIF 28x28": pil(garment(240), "L", "GIF"),
    "photo 60x100": pil(np.pad(np.full((40, 70), 30, np.uint8), ((10, 10), (15, 15)), constant_values=235), "L"),
}


def one_by_one(images: list[bytes]) -> np.ndarray:
    return np.stack([export.decode(tf.constant(image)).numpy() for image in images])


def test_only_plain_grey_28x28_pngs_take_the_fast_path():
    images = list(GREY_28.values()) + list(OTHERS.values())
    fast = export._fast_png(tf.constant(images)).numpy().tolist()
    assert fast == [True] * len(GREY_28) + [False] * len(OTHERS)


def test_a_batch_decodes_as_each_image_alone_in_order():
    kinds = list(GREY_28.items()) + list(OTHERS.items())
    order = rng.permutation(len(kinds))
    images = [kinds[i][1] for i in order]
    batch = tf.function(export.decode_batch)(tf.constant(images)).numpy()
    expected = one_by_one(images)
    for row, i in enumerate(order):
        assert np.array_equal(batch[row], expected[row]), kinds[i][0]
    assert (batch[list(order).index(1)] != expected[list(order).index(0)]).any()  # light is inverted, dark not


@pytest.mark.parametrize("count", [0, 1, 33])
def test_any_batch_size_even_none(count):
    images = [GREY_28["light plain"], OTHERS["photo 60x100"]] * count
    batch = export.decode_batch(tf.constant(images, dtype=tf.string)).numpy()
    assert batch.shape == (2 * count, 28, 28) and batch.dtype == np.uint8
    if count:
        assert np.array_equal(batch, one_by_one(images))


def test_short_strings_are_no_fast_png():
    """substr refuses a start past a string's end: a 1-byte "image" is an image error, as
    before, not a fault of the signature."""
    short = [b"", b"\x89", encode(garment(0))[:40]]
    assert export._fast_png(tf.constant(short)).numpy().tolist() == [False, False, False]


def test_a_broken_png_with_a_good_header_is_still_an_error():
    broken = encode(garment(0))[:60]
    assert export._fast_png(tf.constant([broken])).numpy().tolist() == [True]
    with pytest.raises(tf.errors.InvalidArgumentError):
        export.decode_batch(tf.constant([GREY_28["dark plain"], broken]))
