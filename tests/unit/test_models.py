"""The three candidates and the exported SavedModel's serving contract."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.train import models
from tests.helpers.jobs import encode


@pytest.mark.parametrize("name", models.NAMES)
def test_builders_give_ten_class_probabilities(name):
    model = models.build(name)
    assert model.name == name
    assert model.input_shape == (None, 28, 28, 1)
    out = model(np.random.default_rng(0).random((4, 28, 28, 1), np.float32), training=False).numpy()
    assert out.shape == (4, 10)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5) and (out >= 0).all()
    head = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in head] == [64, 10]


def test_candidates_are_the_reference_architectures():
    def kinds(name):
        return [layer.__class__.__name__ for layer in models.build(name).layers]

    assert kinds("cnn").count("Conv2D") == 1 and "Dropout" not in kinds("cnn")
    assert kinds("dropout").count("Conv2D") == 3 and kinds("dropout").count("Dropout") == 1
    assert kinds("batchnorm").count("Conv2D") == 3 and kinds("batchnorm").count("BatchNormalization") == 2
    assert "BatchNormalization" not in kinds("dropout")


def test_saved_model_signatures(trained_model, small_data):
    """Both signatures, their names and dtypes, as TF Serving will see them."""
    import tensorflow as tf

    from jobs.train import export

    loaded = export.load(trained_model)
    assert set(loaded.signatures) == {"serving_default", "pixels"}
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    assert default.structured_input_signature[1]["image_bytes"].dtype == tf.string
    pixels = loaded.signatures["pixels"]
    assert pixels.structured_input_signature[1]["pixels"].shape.as_list() == [None, 28, 28]
    for fn in (default, pixels):
        assert set(fn.structured_outputs) == {"probabilities", "class_id", "class_name"}

    test = small_data["test"]
    by_pixels = pixels(pixels=tf.constant(test.images[:16]))
    images = [encode(img, "PNG") for img in test.images[:16]]
    by_png = default(image_bytes=tf.constant(images))
    # A lossless PNG of a 28x28 grey image is the same input: identical predictions.
    np.testing.assert_allclose(by_png["probabilities"].numpy(), by_pixels["probabilities"].numpy(), atol=1e-5)
    ids = by_pixels["class_id"].numpy()
    from jobs.ingest.data import CLASS_NAMES

    assert [n.decode() for n in by_pixels["class_name"].numpy()] == [CLASS_NAMES[i] for i in ids]
    assert (ids == test.labels[:16]).mean() > 0.5


def test_serving_default_takes_any_size_and_colour(trained_model, small_data):
    """The reference clients send large colour JPEGs: decoded, made grey, resized."""
    import tensorflow as tf
    from PIL import Image

    from jobs.train import export

    default = export.load(trained_model).signatures["serving_default"]
    grey = small_data["test"].images[0]
    big = np.asarray(Image.fromarray(grey).resize((299, 299), Image.BILINEAR))
    colour = np.stack([big] * 3, axis=-1)
    out = default(image_bytes=tf.constant([encode(colour, "JPEG"), encode(big, "PNG"), encode(grey, "JPEG")]))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (3, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert len(set(out["class_id"].numpy().tolist())) == 1  # the same garment, three encodings
