"""Every image format the docs promise, through the SavedModel itself (what TF Serving runs)
and through the server: JPEG (colour, grey, CMYK), PNG (grey, colour, palette, 16-bit, with
alpha), GIF (still and animated: the first frame), BMP and WebP. One picture in every
encoding gets the same answer; a transparent area counts as white; an image that cannot be
decoded is named by its index. Runs against SERVING_URL when it is set."""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
import pytest

from .conftest import MODEL, SERVING_URL, check_prediction

PREDICT = f"/v1/models/{MODEL}:predict"


@functools.cache
def picture() -> np.ndarray:
    """A grey garment-like picture, light on dark, 84x84 (a synthetic test image, upscaled)."""
    from jobs.ingest import data

    image = data.synthetic(train_size=10, test_size=10, seed=11)["test"].images[0]
    return np.kron(image, np.ones((3, 3), np.uint8))


def save(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@functools.cache
def encodings() -> dict[str, tuple[bytes, bool]]:
    """name → (bytes, lossless): the same picture in every promised encoding."""
    from PIL import Image

    grey = Image.fromarray(picture())
    rgb = grey.convert("RGB")
    other = Image.fromarray(255 - picture()).convert("RGB")
    wide = np.array(grey, np.uint16) * 257
    return {
        "jpeg": (save(rgb, "JPEG", quality=95), False),
        "jpeg-grey": (save(grey, "JPEG", quality=95), False),
        "jpeg-cmyk": (save(rgb.convert("CMYK"), "JPEG", quality=95), False),
        "png-grey": (save(grey, "PNG"), True),
        "png-rgb": (save(rgb, "PNG"), True),
        "png-grey-alpha": (save(grey.convert("LA"), "PNG"), True),
        "png-rgba": (save(rgb.convert("RGBA"), "PNG"), True),
        "png-palette": (save(grey.convert("P"), "PNG"), True),
        "png-16-bit": (save(Image.fromarray(wide), "PNG"), True),
        "gif": (save(rgb, "GIF"), True),
        "gif-animated": (save(rgb, "GIF", save_all=True, append_images=[other], duration=100), True),
        "bmp": (save(rgb, "BMP"), True),
        "bmp-grey": (save(grey, "BMP"), True),
        "webp-lossless": (save(rgb, "WEBP", lossless=True), True),
        "webp": (save(rgb, "WEBP", quality=95), False),
    }


def transparent_png() -> tuple[bytes, bytes]:
    """The picture with its top third transparent over black, and the same with it white."""
    from PIL import Image

    pixels = picture().copy()
    alpha = np.full_like(pixels, 255)
    alpha[:28] = 0
    hidden = np.stack([pixels * 0, pixels * 0, pixels * 0, alpha], axis=-1).astype(np.uint8)
    hidden[28:, :, :3] = pixels[28:, :, None]
    white = pixels.copy()
    white[:28] = 255
    return save(Image.fromarray(hidden, "RGBA"), "PNG"), save(Image.fromarray(white), "PNG")


@pytest.fixture(scope="module")
def default_signature(trained_model):
    from jobs.train import export

    return export.load(trained_model).signatures["serving_default"]


def run(signature, images: list[bytes]) -> np.ndarray:
    import tensorflow as tf

    return signature(image_bytes=tf.constant(images))["probabilities"].numpy()


def test_every_format_through_the_saved_model(default_signature):
    names = list(encodings())
    probabilities = run(default_signature, [encodings()[n][0] for n in names])
    reference = probabilities[names.index("png-grey")]
    for name, row in zip(names, probabilities, strict=True):
        lossless = encodings()[name][1]
        assert abs(row.sum() - 1) < 1e-4, name
        assert int(row.argmax()) == int(reference.argmax()), name
        np.testing.assert_allclose(row, reference, atol=0.01 if lossless else 0.15, err_msg=name)


def test_transparent_areas_count_as_white(default_signature):
    hidden, white = transparent_png()
    np.testing.assert_allclose(*run(default_signature, [hidden, white]), atol=0.01)


def test_every_format_through_the_server(http, default_signature):
    names = list(encodings())
    images = [encodings()[n][0] for n in names]
    response = http.post(PREDICT, json={"instances": [{"b64": base64.b64encode(image).decode()} for image in images]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(names)
    for prediction in predictions:
        check_prediction(prediction)
    if not SERVING_URL:  # the same model only when it is served here
        direct = run(default_signature, images)
        assert [p["class_id"] for p in predictions] == direct.argmax(axis=1).tolist()


def test_an_image_that_cannot_be_decoded_is_named_by_its_index(http):
    good = encodings()["png-grey"][0]
    broken = good[:60]  # a whole PNG header, then nothing: only decoding finds out
    body = {"instances": [{"b64": base64.b64encode(image).decode()} for image in (good, good, broken, good)]}
    response = http.post(PREDICT, json=body)
    assert response.status_code == 400, response.text
    assert "instances[2]" in response.json()["error"]
    assert http.post(PREDICT, json={"instances": body["instances"][:2]}).status_code == 200
