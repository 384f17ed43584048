"""Errors a client gets, as TF Serving answers them: `{"error": "<one line>"}` with a status code.

TF Serving maps its status codes to HTTP (model_servers/http_server.cc): invalid argument and
failed precondition are 400, not found 404, deadline exceeded 504, unavailable 503, internal
500. This server adds 408 (a body that does not arrive in time) and 413 (a body over the limit).
Messages name what was wrong with the request, never a server path or an internal exception.
"""

from __future__ import annotations

import re


class ApiError(Exception):
    """A request that cannot be served: answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close  # close the connection after the answer (the body was not read)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def overloaded(message: str, retry_after: int = 1, close: bool = False) -> ApiError:
    return ApiError(503, message, {"retry-after": str(retry_after)}, close)


def deadline_exceeded(seconds: float) -> ApiError:
    return ApiError(504, f"Deadline exceeded: the request took longer than {seconds:g} s")


INTERNAL = "Internal error (see the server log)"

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def without_paths(text: str, folder: str) -> str:
    """`text` with paths under `folder` made relative to it, and any other absolute path
    replaced by <path>."""
    folder = folder.rstrip("/")
    text = text.replace(folder + "/", "").replace(folder, ".")
    return _ABSOLUTE_PATH.sub("<path>", text)
