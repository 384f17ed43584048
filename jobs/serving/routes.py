"""TF Serving's REST paths, matched as it matches them (model_servers/http_rest_api_util.cc and
http_server.cc, 2.20.0).

Every path under `/v1/` goes to the REST handler: OPTIONS is a CORS preflight; POST must be
`/v1/models/<name>[/versions/<N>|/labels/<L>]:(predict|classify|regress)`, GET
`/v1/models/<name>[/versions/<N>|/labels/<L>][/metadata]`; anything else is a malformed request
(400). Matching is on the raw (still percent-encoded) path and case-insensitive, as TF Serving's
RE2 patterns are (`(?i)`); the verb after the colon and the `metadata` sub-resource are then
compared exactly, so `:PREDICT` is malformed and `/METADATA` a status call, there and here. A
version is ASCII digits that fit a signed 64-bit integer; anything else is a 400, never a 500.
The model name and the label are percent-decoded. The Prometheus page answers on its own path, whatever the method.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote

from jobs.serving.errors import ApiError, invalid_argument

METRICS_PATH = "/monitoring/prometheus/metrics"
MAX_VERSION = 2**63 - 1
VERBS = ("predict", "classify", "regress")

_VERSION = r"(?:/versions/([0-9]+)|/labels/([^/:]+))?"
PREDICT_RE = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.IGNORECASE)
STATUS_RE = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?", re.IGNORECASE)
API_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Route:
    api: str  # predict, classify, regress, metadata, status, options, metrics
    model: str = ""
    version: int | None = None
    label: str | None = None

    @property
    def verb(self) -> str:
        """The API label of TF Serving's request_latency: the verb of a POST, empty for a GET."""
        return self.api if self.api in VERBS else ""


def route(method: str, raw_path: str) -> Route:
    """The API a request is for, or an ApiError as TF Serving would answer it."""
    if raw_path == METRICS_PATH:
        return Route("metrics")
    if not API_RE.fullmatch(raw_path):
        raise ApiError("NOT_FOUND", f"Not found: {method} {_shown(raw_path)}")
    if method == "OPTIONS":
        return Route("options")
    malformed = invalid_argument(f"Malformed request: {method} {_shown(raw_path)}")
    if method == "POST":
        match = PREDICT_RE.fullmatch(raw_path)
        if not match or match[4] not in VERBS:
            raise malformed
        return Route(match[4], _model_name(match[1]), parse_version(match[2]), _label(match[3]))
    if method == "GET":
        match = STATUS_RE.fullmatch(raw_path)
        if not match:
            raise malformed
        api = "metadata" if match[4] == "metadata" else "status"  # `/METADATA` is a status call there
        return Route(api, _model_name(match[1]) if match[1] else "", parse_version(match[2]), _label(match[3]))
    raise malformed


def parse_version(text: str | None) -> int | None:
    """ASCII digits → a version number; over 64 bits is a client mistake (400)."""
    if text is None:
        return None
    if len(text) > 19 or int(text) > MAX_VERSION:
        raise invalid_argument(f"Failed to convert version: {_shown(text, 40)} to numeric.")
    return int(text)


def _model_name(text: str) -> str:
    return _decoded(text, "model name")


def _label(text: str | None) -> str | None:
    return None if text is None else _decoded(text, "model version label")


def _decoded(text: str, what: str) -> str:
    if "%" not in text:
        return text
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise invalid_argument(f"Failed to decode {what}:{_shown(text, 100)}") from None


def _shown(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
