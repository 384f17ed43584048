"""Images as clients send them: a grey uint8 array `[H,W]` encoded as PNG bytes (what
jobs.predict sends, the model server warms up with, and the benchmarks send)."""

from __future__ import annotations

import io

import numpy as np


def encode(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()
