"""TF Serving's REST API from the client's side: a model's status, predict, and waiting until
a version is AVAILABLE. Stdlib HTTP only: nothing to install in a job image, no TensorFlow."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from jobs.core.cli import JobError
from jobs.core.paths import MODEL_NAME

log = logging.getLogger("jobs.predict")

DEFAULT_URL = "http://127.0.0.1:8501"


class Client:
    """A small TF Serving REST client (stdlib HTTP: nothing to install in a job image)."""

    def __init__(self, url: str, model: str = MODEL_NAME, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None) -> dict:
        """One request; the answer must be a JSON object. Every other outcome is one JobError
        naming the URL: a refused or failed connection, an answer that is not HTTP, a body cut
        short, a redirect (not followed: a POST would be resent elsewhere), a non-object."""
        url = self.url + path
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            if 300 <= err.code < 400:
                where = err.headers.get("Location", "elsewhere")
                raise JobError(
                    f"{url} redirected ({err.code}) to {where}: not followed; give --url the server itself"
                ) from None
            raise ServerError(err.code, _error_text(_read_quietly(err)), url) from None
        except http.client.IncompleteRead as err:
            raise JobError(f"{url} answered with a body cut short ({len(err.partial)} bytes)") from None
        except http.client.HTTPException as err:
            raise JobError(f"{url} did not answer with HTTP ({type(err).__name__})") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise Unreachable(self.url, reason) from None
        try:
            answer = json.loads(body)
        except ValueError:
            raise JobError(f"{url} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise JobError(f"{url} answered with JSON that is not an object")
        return answer

    def status(self) -> dict:
        return self._call("GET", f"/v1/models/{self.model}")

    def predict(self, payload: dict, version: int | None = None) -> dict:
        where = f"/versions/{version}" if version is not None else ""
        return self._call("POST", f"/v1/models/{self.model}{where}:predict", payload)

    def classify(self, images: Sequence[bytes]) -> list[dict]:
        """Encoded images → one {"class_name", "class_id", "probabilities"} per image."""
        payload = {"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode("ascii")}} for image in images]}
        predictions = self.predict(payload).get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise JobError(f"{self.url} answered without one prediction per image")
        if not all(isinstance(p, dict) for p in predictions):
            raise JobError(f"{self.url} answered with predictions that are not objects")
        return predictions


class ServerError(JobError):
    def __init__(self, status: int, message: str, url: str = ""):
        super().__init__(f"{url or 'the server'} answered {status}: {message}")
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx reaches the caller as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def _read_quietly(err: urllib.error.HTTPError) -> bytes:
    try:
        return err.read()
    except (http.client.HTTPException, OSError):
        return b""


class Unreachable(JobError):
    """No answer at all: `refused` when nothing listens there (connection refused)."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"cannot reach {url}: {reason}")
        self.refused = isinstance(reason, ConnectionRefusedError)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:300] or "(no body)"


def wait_for_version(
    client: Client,
    wanted: int | None,
    timeout: float,
    interval: float = 1.0,
    check: Callable[[], None] | None = None,
    refused: float | None = None,
) -> int:
    """Polls the model status until version `wanted` (None: any version) is AVAILABLE and
    returns it; a load failure ends it early, and so does `check` (called before each poll,
    e.g. to raise when the server's process has exited). With `refused`, a server that refuses
    the connection that many seconds in a row is not starting but absent: its Unreachable is
    raised (a server that answers, loading, is waited for up to `timeout`). Logs when it starts
    waiting and when what it sees changes, not on every poll."""
    started = time.monotonic()
    deadline = started + timeout
    what = f"version {wanted}" if wanted is not None else "a version"
    last = "no answer yet"
    said = None
    refused_since = None
    while True:
        if check is not None:
            check()
        try:
            entries = client.status().get("model_version_status") or []
            entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
            mine = [e for e in entries if wanted is None or str(e.get("version")) == str(wanted)]
            ready = [e for e in mine if e.get("state") == "AVAILABLE"]
            if ready:
                version = int(ready[0].get("version"))
                log.info(
                    "version %d of %s is AVAILABLE at %s (after %.1f s)",
                    version,
                    client.model,
                    client.url,
                    time.monotonic() - started,
                )
                return version
            ended = mine[0] if wanted is not None and mine and mine[0].get("state") == "END" else {}
            if ended.get("status", {}).get("error_code", "OK") != "OK":
                raise JobError(f"version {wanted} failed to load: {ended['status'].get('error_message', '')}")
            seen = ", ".join(f"{e.get('version')} {e.get('state')}" for e in entries) or "none"
            last = f"versions reported: {seen}"
            refused_since = None
        except Unreachable as err:
            last = f"no answer yet: {err}"
            refused_since = (refused_since or time.monotonic()) if err.refused else None
            if refused is not None and refused_since is not None and time.monotonic() - refused_since >= refused:
                raise
        except ServerError as err:
            last = str(err)
        if time.monotonic() >= deadline:
            raise JobError(f"timed out after {timeout:g}s waiting for {client.model} {what} at {client.url} ({last})")
        seen = last.split(":")[0]  # the kind of answer, not its details (one line per change)
        if seen != said:
            log.info("waiting up to %g s for %s at %s (%s)", timeout, what, client.url, last)
            said = seen
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))


def classify_in_batches(client: Client, images: list[bytes], batch_size: int) -> list[dict]:
    predictions = []
    for start in range(0, len(images), batch_size):
        predictions.extend(client.classify(images[start : start + batch_size]))
    return predictions
