"""The model server's client: classify images, wait for a version, or score a test sample.

    python -m jobs.predict shirt.png boot.jpg                       class names and probabilities
    python -m jobs.predict --work-dir W --dataset D --samples 5     the same for test samples
    python -m jobs.predict --work-dir W --wait-version latest       until the server serves the
                                                                    highest version on disk
    python -m jobs.predict --work-dir W --dataset D --check --min-accuracy 0.8

It speaks TF Serving's REST API, so it works against the local server (`make serve`) and
against TF Serving in the cluster alike. Images travel as PNG or JPEG bytes through the
`serving_default` signature in the reference request format
`{"instances": [{"image_bytes": {"b64": "..."}}]}`, so the server's decoding is exercised too.
It needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs import png
from jobs.cli import JobError, emit, fraction, parser, positive_float, positive_int, run, version_or
from jobs.paths import MODEL_NAME, Work, versions

log = logging.getLogger("jobs.predict")

DEFAULT_URL = "http://127.0.0.1:8501"
DEFAULT_CHECK_SAMPLES = 1000
DEFAULT_SHOW_SAMPLES = 10


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
            raise Unreachable(f"cannot reach {self.url}: {reason}") from None
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
    pass


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
) -> int:
    """Polls the model status until version `wanted` (None: any version) is AVAILABLE and
    returns it; a load failure ends it early, and so does `check` (called before each poll,
    e.g. to raise when the server's process has exited). Logs when it starts waiting and when
    what it sees changes, not on every poll."""
    started = time.monotonic()
    deadline = started + timeout
    what = f"version {wanted}" if wanted is not None else "a version"
    last = "no answer yet"
    said = None
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
        except Unreachable as err:
            last = f"no answer yet: {err}"
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


def show(name: str, prediction: dict, top: int = 3) -> None:
    probabilities = prediction.get("probabilities") or []
    from jobs.data import CLASS_NAMES

    best = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[:top]
    others = ", ".join(f"{CLASS_NAMES[i] if i < len(CLASS_NAMES) else i} {probabilities[i]:.3f}" for i in best)
    print(f"{name}\t{prediction.get('class_name')}\t{others}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = parser("Classify images through a TF Serving REST endpoint (local server or cluster).")
    p.add_argument("images", nargs="*", type=Path, help="PNG or JPEG files to classify")
    p.add_argument("--url", default=DEFAULT_URL, help="the server's base URL")
    p.add_argument("--model-name", default=MODEL_NAME, help="model name in the URL paths")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".work"),
        help="the work dir: datasets under data/, served versions under models/",
    )
    p.add_argument("--dataset", help="dataset under <work>/data whose test split to sample")
    p.add_argument(
        "--samples",
        type=positive_int,
        help=f"test samples to send (default {DEFAULT_SHOW_SAMPLES} to show, {DEFAULT_CHECK_SAMPLES} for --check)",
    )
    p.add_argument("--check", action="store_true", help="score the samples and fail below --min-accuracy")
    p.add_argument("--min-accuracy", type=fraction, default=0.0, help="the --check threshold")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per request")
    p.add_argument(
        "--wait-version",
        type=version_or("latest", minimum=0),
        help="'latest' (the newest version the servers' config files pin, else the highest on disk) "
        "or a number: wait until served",
    )
    p.add_argument("--timeout", type=positive_float, default=300.0, help="how long --wait-version waits")
    p.add_argument("--request-timeout", type=positive_float, default=60.0, help="timeout of one HTTP request")
    return p


def served_dataset(work: Work, model_name: str) -> tuple[int, str] | None:
    """The newest served version and the dataset it was trained on (its promotion record)."""
    found = versions(work.served(model_name))
    if not found:
        return None
    version = max(found)
    try:
        return version, str(json.loads((found[version] / "promotion.json").read_text())["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def what_it_knows(work: Work, model_name: str) -> str | None:
    """For a model trained on generated garments, what to expect of a user's own images."""
    served = served_dataset(work, model_name)
    if served is None or served[1] != "synthetic":
        return None
    return (
        f"version {served[0]} learnt from drawn garments (DATASET=synthetic): expect it to name "
        "drawings like samples/*.png, not photographs (docs/data.md)"
    )


def sample_dataset(work: Work, model_name: str, asked: str | None) -> str:
    """The dataset whose test split to sample: the one asked for, else the one the served
    model was trained on, else the only one ingested. A missing one names the fix."""
    served = served_dataset(work, model_name)
    ingested = sorted(p.parent.name for p in (work.root / "data").glob("*/manifest.json"))
    name = asked or (served[1] if served else (ingested[0] if len(ingested) == 1 else None))
    if name is None:
        raise JobError(
            f"no test images to sample: nothing is served or ingested under {work.root} "
            "(run make local first, or give --dataset, --work-dir, or image files)"
        )
    if name in ingested:
        if not asked:
            why = f"the dataset version {served[0]} was trained on" if served else "the only dataset ingested"
            log.info("test images from %s, %s", name, why)
        return name
    hint = (
        f"the served version {served[0]} was trained on {served[1]}: make predict DATASET={served[1]}"
        if served and served[1] != name and served[1] in ingested
        else f"ingest it first: make local DATASET={name} (or python -m jobs.ingest --work-dir {work.root} "
        f"--dataset {name})"
    )
    have = f" (ingested: {', '.join(ingested)})" if ingested else ""
    raise JobError(f"no dataset {name} under {work.root / 'data'}{have}; {hint}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        raise JobError(f"--url must start with http:// or https://, got {args.url!r}")
    if args.check and args.images:
        raise JobError("--check scores test samples: give either image files or --check, not both")
    if args.images and (args.samples or args.dataset):
        raise JobError("give either image files or test samples (--dataset, --samples), not both")
    client = Client(args.url, args.model_name, args.request_timeout)
    work = Work(args.work_dir)
    if args.check or args.samples or args.dataset or (not args.images and args.wait_version is None):
        args.dataset = sample_dataset(work, args.model_name, args.dataset)
    try:
        return predict(args, client, work)
    except Unreachable as err:
        raise JobError(f"{err} (is the server running? make serve starts it; --url or URL points elsewhere)") from None


def predict(args, client: Client, work: Work) -> int:
    """The three modes in turn: wait for a version, then classify files or test samples."""
    if args.wait_version is not None:
        wanted = wait_version(args, client, work)
        if not (args.images or args.dataset):  # waiting was the whole job: say what came
            emit(version=wanted)
    if args.images:
        if note := what_it_knows(work, args.model_name):
            log.info("%s", note)
        classify_files(args, client)
    elif args.dataset:
        classify_samples(args, client, work)
    return 0


def wait_version(args, client: Client, work: Work) -> int:
    wanted = args.wait_version
    if wanted == "latest":
        from jobs import serving_config

        # The newest version a server is pinned to (the canary's, during a canary), else the
        # highest on disk.
        wanted = serving_config.newest_served(work, args.model_name)
        if wanted is None:
            raise JobError(f"no version folders under {work.served(args.model_name)}: promote a model first")
    wait_for_version(client, wanted, args.timeout)
    return wanted


def classify_files(args, client: Client) -> None:
    encoded = []
    for path in args.images:
        try:
            encoded.append(path.read_bytes())
        except OSError as err:
            raise JobError(f"cannot read {path}: {err.strerror}") from None
    for start in range(0, len(encoded), args.batch_size):
        batch = args.images[start : start + args.batch_size]
        try:
            predictions = client.classify(encoded[start : start + args.batch_size])
        except ServerError as err:
            # The server numbers the instances; name the file instead.
            raise JobError(
                re.sub(
                    r"instances\[(\d+)\]",
                    lambda m, batch=batch: str(batch[int(m[1])]) if int(m[1]) < len(batch) else m[0],
                    str(err),
                )
            ) from None
        for path, prediction in zip(batch, predictions, strict=True):
            show(str(path), prediction)


def classify_samples(args, client: Client, work: Work) -> None:
    """Test samples of args.dataset: shown, or with --check scored against --min-accuracy."""
    from jobs import data

    test = data.load(work.dataset(args.dataset), splits=("test",))["test"]
    wanted_samples = args.samples or (DEFAULT_CHECK_SAMPLES if args.check else DEFAULT_SHOW_SAMPLES)
    count = min(wanted_samples, len(test.labels))
    if count == 0:
        raise JobError(f"the test split of {args.dataset} is empty")
    images = [png.encode(test.images[i]) for i in range(count)]
    labels = test.labels[:count].astype(int)
    started = time.monotonic()
    predictions = classify_in_batches(client, images, args.batch_size)
    elapsed = time.monotonic() - started
    predicted = np.array([int(p.get("class_id", -1)) for p in predictions])
    if not args.check:
        for i, prediction in enumerate(predictions):
            show(f"sample {i} (label {data.CLASS_NAMES[labels[i]]})", prediction)
        return
    accuracy = float(np.mean(predicted == labels))
    log.info("scored %d samples in %.1fs through %s", count, elapsed, args.url)
    emit(accuracy=accuracy, samples=count)
    if accuracy < args.min_accuracy:
        raise JobError(f"accuracy {accuracy:.4f} is below --min-accuracy {args.min_accuracy:g}")


if __name__ == "__main__":
    sys.exit(run(main))
