"""What a string value will cost to decode, read from its header before TensorFlow sees it.

The model decides what its string inputs are. A value that starts like an image (JPEG, PNG,
GIF, BMP or WebP, what TensorFlow's decode_image reads) has its size read from the header,
without decoding a pixel: that is how the queue is bounded in decoded pixels, and how an image
over the per-image or per-request pixel limit is refused before any decoding (this server's
limits; TF Serving has none). Any other value costs 1 and goes to the model as it is: if the
model cannot read it, its own error says so.
"""

from __future__ import annotations

import io
import warnings
import zlib

import numpy as np

from jobs.serving.errors import invalid_argument

PNG = b"\x89PNG\r\n\x1a\n"
MAGIC = (b"\xff\xd8\xff", PNG, b"GIF87a", b"GIF89a", b"BM")


def looks_like_image(data: bytes) -> bool:
    return data.startswith(MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def png_size(data: bytes) -> tuple[int, int] | None:
    """A PNG's (width, height) from its first chunk, which the PNG specification requires to be
    IHDR, when that chunk's CRC holds (as PIL checks it); None otherwise. Reading 33 bytes is
    the fast path for what clients send most (PIL's open costs tens of microseconds)."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        return None
    if zlib.crc32(data[12:29]) != int.from_bytes(data[29:33], "big"):
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (width, height) if 0 < width < 2**31 and 0 < height < 2**31 else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header; None if it does not read as an image. A header that
    claims a decompression bomb's size reads as 2**31 a side (a PNG's: its own size)."""
    if data.startswith(PNG):
        size = png_size(data)
        if size is not None:
            return size
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:
        return 2**31, 2**31
    except Exception:  # PIL raises many kinds for "not an image"
        return None


def costs(values: np.ndarray, where: str, max_image_pixels: int, max_request_pixels: int) -> np.ndarray:
    """The decoding cost of each string value (same shape): an image's pixels, else 1; a 400
    for the first image over a limit."""
    flat = values.reshape(-1)
    found = np.ones(flat.size, np.int64)
    total = 0
    for i, data in enumerate(flat):
        if not isinstance(data, bytes) or not looks_like_image(data):
            continue
        size = image_size(data)
        if size is None:
            continue
        width, height = size
        pixels = width * height
        if pixels > max_image_pixels:
            shown = "" if width >= 2**31 else f" of {width}x{height} pixels"
            raise invalid_argument(f"{where}[{i}]: image{shown} is over the limit of {max_image_pixels} pixels")
        total += pixels
        if total > max_request_pixels:
            raise invalid_argument(
                f"{where}: the images up to [{i}] hold {total} pixels, over the limit of {max_request_pixels} "
                "decoded pixels per request"
            )
        found[i] = max(pixels, 1)
    return found.reshape(values.shape)
