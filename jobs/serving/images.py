"""Image bytes checked from their headers before TensorFlow decodes anything: a supported
format, a size within the per-image limit, and a total within the per-request budget. What
each image will cost to decode (its pixels) is known here, which is how the queue is bounded."""

from __future__ import annotations

import io
import warnings

import numpy as np

from jobs.serving.errors import bad_request

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")  # what TensorFlow's decode_image reads
FORMATS_TEXT = "JPEG, PNG, GIF, BMP or WebP"


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header; ValueError if it is no supported image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        return "BOMB", 2**31, 2**31
    except Exception:  # PIL raises many kinds for "not an image"
        raise ValueError("not a decodable image") from None
    return fmt or "", width, height


def pixel_costs(values: np.ndarray, where: str, max_image_pixels: int, max_request_pixels: int) -> np.ndarray:
    """The decoded pixels of each image in `values` (flat); a 400 for the first bad one."""
    costs = np.empty(values.size, np.int64)
    total = 0
    for i, data in enumerate(values.ravel()):
        try:
            fmt, width, height = image_size(data)
        except ValueError:
            raise bad_request(f"{where}[{i}]: not a decodable image (send {FORMATS_TEXT} bytes)") from None
        if fmt != "BOMB" and fmt not in FORMATS:
            raise bad_request(f"{where}[{i}]: {fmt} images are not supported (send {FORMATS_TEXT})")
        pixels = width * height
        if pixels > max_image_pixels or width == 0 or height == 0:
            size = "" if fmt == "BOMB" else f" of {width}x{height} pixels"
            raise bad_request(f"{where}[{i}]: image{size} is over the limit of {max_image_pixels} pixels")
        total += pixels
        if total > max_request_pixels:
            raise bad_request(
                f"{where}: the images up to [{i}] hold {total} pixels, over the limit of {max_request_pixels} "
                "decoded pixels per request"
            )
        costs[i] = pixels
    return costs
