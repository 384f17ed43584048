"""The SavedModel that TF Serving 2.20 serves, with two signatures.

    serving_default  image_bytes: string [N]      JPEG, PNG, GIF, BMP or WebP of any size, colour or grey
    pixels           pixels:      uint8  [N,28,28]

Both return probabilities float32 [N,10], class_id int64 [N], class_name string [N].

`decode_image(channels=1)` refuses GIF, BMP and WebP in TF 2.20 ("channels must be 0 or 3"),
and a CMYK JPEG cannot be converted to grey by libjpeg: images are decoded with their own
channels (grey, grey+alpha, RGB, RGBA; the first frame of an animated GIF; 16-bit PNG as
8-bit), laid over white where transparent, then made grey.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from jobs.data import CLASS_NAMES, IMAGE_SHAPE, to_model_input

SIGNATURES = ("serving_default", "pixels")
OUTPUTS = ("probabilities", "class_id", "class_name")


WORK_SIDE = 128  # larger images are brought down to this side, on their own channels, first


def _jpeg(image: tf.Tensor) -> tf.Tensor:
    """A JPEG → uint8 [H,W,C]: grey straight from libjpeg, scaled down by 2, 4 or 8 while
    decoding when large (the DCT does it nearly for free); CMYK (4 components), which libjpeg
    cannot make grey, as RGB."""
    height, width, components = tf.unstack(tf.io.extract_jpeg_shape(image))
    side = tf.maximum(height, width)
    index = tf.reduce_sum(tf.cast(side >= tf.constant([2, 4, 8]) * WORK_SIDE, tf.int32))

    def scaled(ratio):
        return lambda: tf.io.decode_jpeg(image, channels=1, ratio=ratio)

    return tf.cond(
        tf.equal(components, 4),
        lambda: tf.io.decode_jpeg(image, channels=3),
        lambda: tf.switch_case(index, [scaled(1), scaled(2), scaled(4), scaled(8)]),
    )


def grey(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → float32 [H,W,1] in 0-255, at most WORK_SIDE a side: decoded,
    shrunk (keeping its aspect ratio), laid over white where transparent, made grey.

    Shrinking first, on the decoded uint8 channels, keeps the cost of a large image to its
    decoding: a 4096x4096 image is never copied at full size as floats."""
    pixels = tf.cond(
        tf.io.is_jpeg(image),
        lambda: _jpeg(image),
        lambda: tf.io.decode_image(image, channels=0, expand_animations=False),
    )
    size = tf.shape(pixels)[:2]
    pixels = tf.cond(
        tf.reduce_max(size) > WORK_SIDE,
        lambda: tf.image.resize(pixels, (WORK_SIDE, WORK_SIDE), antialias=True, preserve_aspect_ratio=True),
        lambda: tf.cast(pixels, tf.float32),
    )

    def over_white(luma, alpha):
        alpha = alpha / 255.0
        return luma * alpha + 255.0 * (1.0 - alpha)

    def rgb():
        return tf.image.rgb_to_grayscale(pixels[:, :, :3])

    return tf.switch_case(
        tf.shape(pixels)[2] - 1,
        [
            lambda: pixels[:, :, :1],  # grey
            lambda: over_white(pixels[:, :, :1], pixels[:, :, 1:2]),  # grey + alpha
            rgb,
            lambda: over_white(rgb(), pixels[:, :, 3:4]),  # RGB + alpha
        ],
    )


def _decode(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → uint8 [28,28]: decoded, made grey, resized."""
    pixels = tf.image.resize(grey(image), IMAGE_SHAPE, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(pixels[:, :, 0]), 0, 255), tf.uint8)


def signatures(model) -> dict:
    class_names = tf.constant(CLASS_NAMES)

    def predict(pixels: tf.Tensor) -> dict:
        probabilities = model(to_model_input(pixels), training=False)
        class_id = tf.argmax(probabilities, axis=1)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(class_names, class_id),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def from_bytes(image_bytes):
        pixels = tf.map_fn(_decode, image_bytes, fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.uint8))
        return predict(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="pixels")])
    def from_pixels(pixels):
        return predict(pixels)

    return {"serving_default": from_bytes, "pixels": from_pixels}


def save(model, path: Path) -> None:
    """Writes the servable SavedModel. Under MultiWorkerMirroredStrategy every worker calls
    this (saving is a collective); only the chief's path is kept."""
    tf.saved_model.save(model, str(path), signatures=signatures(model))


def load(path: Path):
    return tf.saved_model.load(str(path))
