"""Images from the real world: product photos are dark on a light backdrop, Fashion-MNIST's
garments light on black, cropped to the garment and fitted into 28x28. `serving_default`
puts a photo into that form (polarity, crop, fit); `pixels` is unchanged. Checked on
photo-like JPEGs made from the synthetic classes' garments (tests/serving/photos.py), through the
SavedModel's own decoding and through its predictions."""

from __future__ import annotations

import numpy as np
import pytest

from .photos import fitted, garments, photo


@pytest.fixture(scope="module")
def model(trained_model):
    from jobs.train import export

    return export.load(trained_model)


@pytest.fixture(scope="module")
def shirts_and_boots():
    """30 photo-like JPEGs of every class, and their labels."""
    rng = np.random.default_rng(7)
    drawn = garments()
    labels = np.repeat(np.arange(10), 30)
    return [photo(drawn[c], rng) for c in labels], labels


def decoded(image: bytes) -> np.ndarray:
    """The 28x28 that serving_default's decoding makes of one image."""
    import tensorflow as tf

    from jobs.train import export

    return export.decode(tf.constant(image)).numpy().astype(np.float32)


def test_a_photo_becomes_a_fitted_light_garment_on_black():
    rng = np.random.default_rng(1)
    drawn = garments()
    templates = np.stack([fitted(g) for g in drawn])
    for light in (True, False):  # dark on light (a product photo), and light on dark
        for c in range(10):
            pixels = decoded(photo(drawn[c], rng, light=light))
            border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
            assert np.median(border) < 20, (light, c)  # the backdrop is black
            assert pixels.max() > 200, (light, c)  # the garment is light, at full contrast
            rows, cols = np.where(pixels.max(axis=1) > 20)[0], np.where(pixels.max(axis=0) > 20)[0]
            assert max(rows[-1] - rows[0], cols[-1] - cols[0]) >= 24, (light, c)  # its longer side fills 28
            # By construction: the garment it recovers is the class's own, fitted as Fashion-MNIST was.
            scores = [np.corrcoef(pixels.ravel(), t.ravel())[0, 1] for t in templates]
            assert int(np.argmax(scores)) == c, (light, c, np.round(scores, 2))


def test_photos_get_the_answer_of_their_garment_in_fashion_mnist_form(model, shirts_and_boots):
    """A photo is classified as its garment, cropped and fitted as Fashion-MNIST was made, is
    classified through `pixels` (the best the decoding can do for this model) far more often
    than without the normalisation. The model was trained briefly and may call a garment
    something else either way: the agreement, not the accuracy, is what the decoding controls."""
    import tensorflow as tf

    from jobs.train import export

    photos, labels = shirts_and_boots
    garment = np.stack([fitted(g) for g in garments()]).round().astype(np.uint8)
    expected = model.signatures["pixels"](pixels=tf.constant(garment))["class_id"].numpy()[labels]
    with_it = model.signatures["serving_default"](image_bytes=tf.constant(photos))["class_id"].numpy()
    plain = np.stack([export.plain(tf.constant(p)).numpy() for p in photos])
    without = model.signatures["pixels"](pixels=tf.constant(plain))["class_id"].numpy()
    agree, before = np.mean(with_it == expected), np.mean(without == expected)
    assert agree >= 0.5 and agree > before + 0.3, (agree, before)


def test_images_in_fashion_mnist_form_are_unchanged(model, small_data):
    """28x28 grey images (the test split: noisy, dark) get exactly the pixels signature's
    answer; so do big images whose border is no plain backdrop (a scene): resized as before."""
    import io

    import tensorflow as tf
    from PIL import Image

    images = small_data["test"].images[:16]

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        return buffer.getvalue()

    by_pixels = model.signatures["pixels"](pixels=tf.constant(images))["probabilities"].numpy()
    by_png = model.signatures["serving_default"](image_bytes=tf.constant([png(i) for i in images]))
    np.testing.assert_allclose(by_png["probabilities"].numpy(), by_pixels, atol=1e-5)
    from jobs.train import export

    scene = np.add.outer(np.linspace(0, 120, 300), np.linspace(0, 135, 200)).astype(np.uint8)  # light across it
    scene[100:200, 50:150] = 30
    np.testing.assert_array_equal(decoded(png(scene)), export.plain(tf.constant(png(scene))).numpy())


def test_a_28x28_garment_dark_on_light_is_inverted(model):
    import io

    from PIL import Image

    garment = (fitted(garments()[9])).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(255 - garment).save(buffer, "PNG")
    np.testing.assert_array_equal(decoded(buffer.getvalue()), garment.astype(np.float32))
