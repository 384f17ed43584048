"""The three candidate models. All take float32 `[N,28,28,1]` in [0, 1] and end in
Dense(64, relu) → Dense(10, softmax)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jobs.ingest.data import CLASS_NAMES, IMAGE_SHAPE

if TYPE_CHECKING:  # tf_keras is imported where a model is built: `--help` must not load TensorFlow
    import tf_keras as keras

INPUT_SHAPE = (*IMAGE_SHAPE, 1)
NUM_CLASSES = len(CLASS_NAMES)


def _head(x):
    from tf_keras import layers

    x = layers.Dense(64, activation="relu")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)


def cnn() -> keras.Model:
    """One convolution and a pooling layer: the small baseline."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, _head(x), name="cnn")


def dropout() -> keras.Model:
    """Three convolutions with dropout before the last."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, _head(x), name="dropout")


def batchnorm() -> keras.Model:
    """Three convolutions, the first two followed by batch normalisation and a sigmoid."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3)(x)
        # momentum 0.9, not 0.99: the moving statistics that inference uses must settle within
        # a few hundred steps, or a short run scores at chance on the test split.
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("sigmoid")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, _head(x), name="batchnorm")


BUILDERS: dict[str, Callable[[], keras.Model]] = {"cnn": cnn, "dropout": dropout, "batchnorm": batchnorm}
NAMES = tuple(BUILDERS)


def build(name: str) -> keras.Model:
    return BUILDERS[name]()
