"""A request body → JSON, with the cost bounded before any object is built.

A body of millions of tiny lists or strings is cheap to send and expensive to parse into
Python objects (time under the GIL, and memory). So the structure is counted in the raw bytes
first, which costs a few milliseconds for the largest allowed body: the brackets and braces
(lists and objects) and the commas (an upper bound on the values). Bytes inside strings are
counted too, so the counts are upper bounds; base64 holds none of these characters. Only a
body within both limits is parsed, by orjson (the standard library's parser where orjson is
missing), whose own nesting limit (1024) ends a too-deep body early.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.serving.errors import bad_request

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is pinned in requirements/jobs.txt
    orjson = None


def check_structure(body: bytes, max_containers: int, max_values: int) -> None:
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_containers:
        raise bad_request(
            f"JSON Parse error: the body holds {containers} lists and objects, over the limit of {max_containers}"
        )
    values = body.count(b",") + 1
    if values > max_values:
        raise bad_request(f"JSON Parse error: the body holds {values} values, over the limit of {max_values}")


def parse(body: bytes, max_containers: int, max_values: int) -> Any:
    if not body.strip():
        raise bad_request("JSON Parse error: The document is empty")
    check_structure(body, max_containers, max_values)
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise bad_request(f"JSON Parse error: {_orjson_reason(err)}") from None
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("JSON Parse error: the body is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise bad_request(f"JSON Parse error: {err.msg} at offset {err.pos}") from None
    except (ValueError, RecursionError) as err:
        raise bad_request(f"JSON Parse error: {str(err)[:200] or 'nested too deeply'}") from None


def _orjson_reason(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:200] + "..."


def dumps(payload: Any) -> bytes:
    """JSON bytes; numpy arrays and scalars are written directly (orjson), float32 with its
    shortest round-trip digits, NaN and infinity as null."""
    if orjson is not None:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(_plain(payload), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _plain(value: Any) -> Any:
    import math

    import numpy as np

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.ndim else _plain(value[()])
    if isinstance(value, np.floating):
        return float(str(value)) if math.isfinite(value) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
