"""Every limit of the model server, in one place: its default, what it bounds, and what a
client gets when it hits it. The command line (`--help`) and docs/serving.md are made from,
and tested against, this table."""

from __future__ import annotations

import dataclasses

MIB = 1024 * 1024


def _limit(default, what: str, answer: str):
    return dataclasses.field(default=default, metadata={"help": what, "answer": answer})


@dataclasses.dataclass(frozen=True)
class Limits:
    # What one request may ask for.
    max_body_bytes: int = _limit(10 * MIB, "largest request body", "413, then the connection is closed")
    max_instances: int = _limit(1024, "most instances (or examples) in one request", "400")
    max_image_pixels: int = _limit(
        4096 * 4096, "largest image (width x height, read from its header) in a string input", "400 naming the instance"
    )
    max_request_pixels: int = _limit(
        64 * MIB,
        "most decoded pixels in one request, summed over its images (read from their headers, before decoding)",
        "400",
    )
    max_json_containers: int = _limit(
        65536, "most JSON lists and objects in a body (counted in the raw bytes before parsing)", "400"
    )
    max_json_values: int = _limit(
        1024 * 1024, "most JSON values in a body (counted in the raw bytes before parsing)", "400"
    )
    # What the server takes on at once.
    max_queued_pixels: int = _limit(
        256 * MIB,
        "most decoding cost of work waiting or running (an image counts its width x height, any other "
        "value 1: a 28x28 pixels instance 784), for light requests (up to 1 Mi each) and heavy ones apart",
        "503 with Retry-After",
    )
    max_inflight_body_bytes: int = _limit(
        128 * MIB, "most request body bytes being received or held at once", "503 with Retry-After"
    )
    max_connections: int = _limit(256, "most open connections", "503 with Retry-After, then the connection is closed")
    # How long the server waits.
    request_timeout: float = _limit(
        30.0, "seconds a predict request may take once its body is read (TF Serving: --rest_api_timeout_in_ms)", "504"
    )
    header_timeout: float = _limit(
        10.0, "seconds a connection may take to send a request's headers", "408, then the connection is closed"
    )
    body_timeout: float = _limit(
        30.0, "seconds a request may take to send its body", "408, then the connection is closed"
    )
    keep_alive_timeout: float = _limit(
        5.0,
        "seconds an idle connection is kept open (before its first request and between requests)",
        "the connection is closed",
    )


# Not limits a client can hit, but bounds of the machinery, kept here with the rest.
RETRY_AFTER_SECONDS = 1  # what a 503 asks the client to wait
MAX_HEAD_BYTES = 16 * 1024  # a request head (request line and headers) past this is a 431, then closed
DRAIN_BYTES = 256 * MIB  # after an early 413/503/408, read and drop up to this much so the client reads the answer
DRAIN_SECONDS = 10.0  # ... for at most this long
CHUNK_PIXELS = 4 * MIB  # predict work runs in chunks of at most this many pixels, so that a heavy
# request is interleaved with others and dropped early when its client goes away
LIGHT_PIXELS = 1 * MIB  # a chunk over this is heavy: heavy chunks may occupy every worker but one
INLINE_PIXELS = 64 * 1024  # a lone request up to this runs on the event loop thread (batching.py)
INLINE_SECONDS = 0.002  # ... if its signature's last call, per instance, times its instances is within this


def fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Limits))


def flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")
