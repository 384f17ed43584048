"""The SavedModel that TF Serving 2.20 serves, with two signatures.

    serving_default  image_bytes: string [N]      JPEG, PNG, GIF, BMP or WebP of any size, colour or grey
    pixels           pixels:      uint8  [N,28,28]

Both return probabilities float32 [N,10], class_id int64 [N], class_name string [N]. The version
carries TF Serving's warm-up file (assets.extra/tf_serving_warmup_requests: one request per
signature), which TF Serving and the local server replay before serving it.

`decode_image(channels=1)` refuses GIF, BMP and WebP in TF 2.20 ("channels must be 0 or 3"),
and a CMYK JPEG cannot be converted to grey by libjpeg: images are decoded with their own
channels (grey, grey+alpha, RGB, RGBA; the first frame of an animated GIF; 16-bit PNG as
8-bit), laid over white where transparent, then made grey.

Fashion-MNIST's garments are light on black, cropped to the garment and fitted into 28x28;
product photos are dark on a light backdrop, with margins. `serving_default` puts an image
whose border is a plain backdrop into Fashion-MNIST's form (`fashion_mnist_like`); `pixels`
takes the model's own input as it is. `decode` is the rule for one image; `decode_batch`, what
`serving_default` runs, gives the same pixels with a batched path for grey 28x28 PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from jobs.core import png
from jobs.ingest.data import CLASS_NAMES, IMAGE_SHAPE, to_model_input
from jobs.serving import warmup

SIDE = IMAGE_SHAPE[0]  # Fashion-MNIST's images are square
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


def _decoded(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → uint8 [H,W,C] with its own channels (a large JPEG already scaled)."""
    return tf.cond(
        tf.io.is_jpeg(image),
        lambda: _jpeg(image),
        lambda: tf.io.decode_image(image, channels=0, expand_animations=False),
    )


def grey(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → float32 [H,W,1] in 0-255, at most WORK_SIDE a side: decoded,
    shrunk (keeping its aspect ratio), laid over white where transparent, made grey."""
    return _grey(_decoded(image))


def _grey(pixels: tf.Tensor) -> tf.Tensor:
    """Decoded uint8 [H,W,C] → `grey`'s float32 [H,W,1].

    Shrinking first, on the decoded uint8 channels, keeps the cost of a large image to its
    decoding: a 4096x4096 image is never copied at full size as floats."""
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


# A photo's background is "plain" when its border pixels stay within this mean distance of
# their median; the object is what differs from that background by more than TRIM of the
# largest difference (Fashion-MNIST trimmed at 5% of the intensity range), and more than
# twice the border's own spread.
PLAIN_BORDER = 24.0
TRIM = 0.1


def backdrop(grey: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Grey images [...,H,W] → each one's background grey (the median of its border pixels),
    the border's spread (mean distance from it), whether the border is plain, and whether it
    is light: for one image or a batch alike."""
    border = tf.concat([grey[..., 0, :], grey[..., -1, :], grey[..., :, 0], grey[..., :, -1]], axis=-1)
    background = tf.sort(border, axis=-1)[..., tf.shape(border)[-1] // 2]
    spread = tf.reduce_mean(tf.abs(border - background[..., None]), axis=-1)
    return background, spread, spread <= PLAIN_BORDER, background > 127.5


def fashion_mnist_like(pixels: tf.Tensor) -> tf.Tensor:
    """A grey image float32 [H,W,1] → float32 [28,28,1] in Fashion-MNIST's form: a light object
    on black, cropped to the object, its longer side 28 pixels, centred.

    Fashion-MNIST's garments are light on a black background; product photos are dark on
    light. When the image's border is plain (a backdrop, not a scene), each pixel becomes its
    distance from the background's grey (so a light background is inverted and a dark one
    kept), the image is cropped to the pixels that differ by more than TRIM of the largest
    distance, stretched to full contrast, and fitted into 28x28 as Fashion-MNIST was made
    (longer side 28, centred). An
    image whose border is not plain is resized as it is; so is a 28x28 image on a dark plain
    background (it is in Fashion-MNIST's form already), and a 28x28 one on a light plain
    background is only inverted."""
    grey = pixels[:, :, 0]
    height, width = tf.shape(grey)[0], tf.shape(grey)[1]
    background, spread, plain, light = backdrop(grey)
    native = tf.logical_and(tf.equal(height, IMAGE_SHAPE[0]), tf.equal(width, IMAGE_SHAPE[1]))

    def as_is():
        return tf.image.resize(pixels, IMAGE_SHAPE, antialias=True)

    def inverted():
        return 255.0 - pixels

    def photo():
        distance = tf.abs(grey - background)
        mask = distance > tf.maximum(TRIM * tf.reduce_max(distance), 2.0 * spread)
        rows = tf.where(tf.reduce_any(mask, axis=1))[:, 0]
        cols = tf.where(tf.reduce_any(mask, axis=0))[:, 0]
        found = tf.size(rows) > 0
        top = tf.cond(found, lambda: rows[0], lambda: tf.constant(0, tf.int64))
        bottom = tf.cond(found, lambda: rows[-1] + 1, lambda: tf.cast(height, tf.int64))
        left = tf.cond(found, lambda: cols[0], lambda: tf.constant(0, tf.int64))
        right = tf.cond(found, lambda: cols[-1] + 1, lambda: tf.cast(width, tf.int64))
        crop = distance[top:bottom, left:right]
        crop = crop * (255.0 / tf.maximum(tf.reduce_max(crop), 1.0))
        side = tf.cast(tf.maximum(bottom - top, right - left), tf.float32)
        size = tf.cast(
            tf.round(tf.cast(tf.stack([bottom - top, right - left]), tf.float32) * float(SIDE) / side), tf.int32
        )
        size = tf.clip_by_value(size, 1, SIDE)
        small = tf.image.resize(crop[:, :, None], size, antialias=True)
        return tf.image.pad_to_bounding_box(small, (SIDE - size[0]) // 2, (SIDE - size[1]) // 2, SIDE, SIDE)

    result = tf.cond(
        plain,
        lambda: tf.cond(native, lambda: tf.cond(light, inverted, lambda: pixels), photo),
        as_is,
    )
    return tf.ensure_shape(tf.reshape(result, (*IMAGE_SHAPE, 1)), (*IMAGE_SHAPE, 1))


def _uint8(pixels: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(pixels[:, :, 0]), 0, 255), tf.uint8)


def decode(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → uint8 [28,28], as `serving_default` sees it: decoded, made grey,
    put in Fashion-MNIST's form."""
    return _uint8(fashion_mnist_like(grey(image)))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fast_png(images: tf.Tensor) -> tf.Tensor:
    """For each encoded image [N], whether it is a PNG of one 8-bit grey channel at 28x28 with
    its pixels (IDAT) straight after its header (no transparency or other chunk between), read
    from its first 41 bytes."""
    # zeros after a shorter string: substr refuses a start past the end, and a string shorter
    # than 41 bytes cannot match
    start = tf.strings.join([tf.strings.substr(images, 0, 41), b"\x00" * 41])
    head = tf.strings.substr(start, 0, 8) == PNG_MAGIC
    ihdr = tf.strings.substr(start, 8, 18) == b"\x00\x00\x00\x0dIHDR" + (28).to_bytes(4, "big") * 2 + b"\x08\x00"
    idat = tf.strings.substr(start, 37, 4) == b"IDAT"
    return head & ihdr & idat


def decode_batch(images: tf.Tensor) -> tf.Tensor:
    """Encoded images [N] → uint8 [N,28,28], each as `decode` makes it, with the work the
    images share done once for the whole batch.

    What clients send most is already Fashion-MNIST's size and kind: a grey 28x28 PNG. For
    such an image `decode` amounts to: inverted when its border is plain and light, else as it
    is (resizing 28x28 to 28x28 changes no value). Per image that was a dozen small ops under
    conditions, which cost twice the model for a 32-image request. Here those images are only
    decoded (one op each), and their border test runs once on the whole batch (sums of whole
    numbers, so the same as one image at a time); any other image goes through `decode`.
    tests/unit/test_export.py holds every case to `decode`."""
    fast = _fast_png(images)
    positions = tf.range(tf.size(images))
    fast_at, other_at = positions[fast], positions[~fast]
    pixels = tf.map_fn(
        lambda image: tf.io.decode_png(image, channels=1)[:, :, 0],
        images[fast],
        fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.uint8),
    )
    _, _, plain, light = backdrop(tf.cast(pixels, tf.float32))
    pixels = tf.where((plain & light)[:, None, None], 255 - pixels, pixels)
    others = tf.map_fn(decode, images[~fast], fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.uint8))
    return tf.dynamic_stitch([fast_at, other_at], [pixels, others])


def plain(image: tf.Tensor) -> tf.Tensor:
    """One encoded image → uint8 [28,28] decoded, made grey and resized, without the polarity
    and crop of `decode` (what `serving_default` did before; for comparisons)."""
    return _uint8(tf.image.resize(grey(image), IMAGE_SHAPE, antialias=True))


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
        return predict(decode_batch(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="pixels")])
    def from_pixels(pixels):
        return predict(pixels)

    return {"serving_default": from_bytes, "pixels": from_pixels}


def save(model, path: Path) -> None:
    """Writes the servable SavedModel, with its warm-up file. Under MultiWorkerMirroredStrategy
    every worker calls this (saving is a collective); only the chief's path is kept."""
    tf.saved_model.save(model, str(path), signatures=signatures(model))
    warmup.write(path, warmup_requests())


def warmup_requests() -> dict:
    """What TF Serving replays before it serves a version (assets.extra/tf_serving_warmup_requests):
    one black image through each signature, so that the first client's request costs no more
    than the next ones."""
    black = np.zeros((1, *IMAGE_SHAPE), np.uint8)
    return {
        "serving_default": {"image_bytes": np.array([png.encode(black[0])], dtype=object)},
        "pixels": {"pixels": black},
    }


def load(path: Path):
    return tf.saved_model.load(str(path))
