"""Errors a client gets, as TF Serving answers them: `{"error": "<message>"}` with the HTTP status
of the error's canonical code.

TF Serving 2.20 maps each code to HTTP in `model_servers/http_server.cc` (`ToHTTPStatusCode`):
the table below is that mapping. Its Prometheus series `request_count` is labelled with the
code's name (`OK`, `INVALID_ARGUMENT`...), so every error here carries its code, and the HTTP
status follows from it. This server adds 408 (a body that does not arrive in time), 413 (a
body over the limit) and 431 (a request head over the limit), which TF Serving does not have:
they keep a code for the metrics and override the status. Messages never hold a server path
or an internal exception's text.
"""

from __future__ import annotations

import re

# Canonical codes in their numeric order (tensorflow/core/protobuf/error_codes.proto).
CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ApiError(Exception):
    """A request that cannot be served: answered as {"error": message} with the status of
    `code` (or `status`, for this server's own 408, 413 and 431)."""

    def __init__(
        self,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
        status: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.status = status or HTTP_STATUS[code]
        self.message = message
        self.headers = headers or {}
        self.close = close  # close the connection after the answer (the body was not read)


def invalid_argument(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


def failed_precondition(message: str) -> ApiError:
    return ApiError("FAILED_PRECONDITION", message)


def not_found(message: str) -> ApiError:
    return ApiError("NOT_FOUND", message)


def unimplemented(message: str) -> ApiError:
    return ApiError("UNIMPLEMENTED", message)


def internal(message: str) -> ApiError:
    return ApiError("INTERNAL", message)


def overloaded(message: str, retry_after: int = 1, close: bool = False) -> ApiError:
    return ApiError("UNAVAILABLE", message, {"retry-after": str(retry_after)}, close)


def deadline_exceeded(seconds: float) -> ApiError:
    return ApiError("DEADLINE_EXCEEDED", f"Deadline exceeded: the request took longer than {seconds:g} s")


def too_large(message: str) -> ApiError:
    return ApiError("RESOURCE_EXHAUSTED", message, close=True, status=413)


def too_large_head(limit: int) -> ApiError:
    return ApiError(
        "RESOURCE_EXHAUSTED", f"The request head is over the limit of {limit} bytes", close=True, status=431
    )


def timed_out(message: str) -> ApiError:
    return ApiError("DEADLINE_EXCEEDED", message, close=True, status=408)


def code_name(number: int) -> str:
    return CODES[number] if 0 <= number < len(CODES) else "UNKNOWN"


INTERNAL = "Internal error (see the server log)"

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def without_paths(text: str, folder: str) -> str:
    """`text` with paths under `folder` made relative to it, and any other absolute path
    replaced by <path>."""
    folder = folder.rstrip("/")
    text = text.replace(folder + "/", "").replace(folder, ".")
    return _ABSOLUTE_PATH.sub("<path>", text)
