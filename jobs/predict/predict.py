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
import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs.core import png, serving_config
from jobs.core.cli import JobError, emit, fraction, named, parser, positive_float, positive_int, version_or
from jobs.core.paths import MODEL_NAME, Work, version_record, versions
from jobs.ingest import data
from jobs.ingest.data import CLASS_NAMES
from jobs.predict.client import DEFAULT_URL, Client, ServerError, Unreachable, classify_in_batches, wait_for_version

log = logging.getLogger("jobs.predict")

DEFAULT_CHECK_SAMPLES = 1000
DEFAULT_SHOW_SAMPLES = 10


def show(name: str, prediction: dict, top: int = 3) -> None:
    probabilities = prediction.get("probabilities") or []

    best = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])[:top]
    others = ", ".join(f"{CLASS_NAMES[i] if i < len(CLASS_NAMES) else i} {probabilities[i]:.3f}" for i in best)
    print(f"{name}\t{prediction.get('class_name')}\t{others}", flush=True)


def wait_version_arg(text: str) -> str | int:
    """--wait-version: a version number, or `latest` or `stable` (resolved against the work dir)."""
    return text if text == "stable" else version_or("latest", minimum=0)(text)


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
        type=wait_version_arg,
        help="'latest' (the newest version the servers' config files pin, else the highest on disk), "
        "'stable' (the version the stable track serves: the one before a canary's while it runs) "
        "or a number: wait until served",
    )
    p.add_argument("--timeout", type=positive_float, default=300.0, help="how long --wait-version waits")
    p.add_argument(
        "--refused-timeout",
        type=positive_float,
        help="how long --wait-version goes on while nothing listens at --url (connection refused); "
        "by default as long as --timeout, for a server still starting",
    )
    p.add_argument("--request-timeout", type=positive_float, default=60.0, help="timeout of one HTTP request")
    return p


def served_dataset(work: Work, model_name: str) -> tuple[int, str] | None:
    """The newest served version and the dataset it was trained on (its promotion record)."""
    found = versions(work.served(model_name))
    if not found:
        return None
    version = max(found)
    try:
        return version, str(json.loads(version_record(found[version]).read_text())["dataset"])
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
    ingested = sorted(p.parent.name for p in work.data.glob("*/manifest.json"))
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


@dataclasses.dataclass
class Query:
    """What the command is asked: wait for a version, then classify files or test samples
    (shown, or scored against a threshold with `check`)."""

    url: str
    model_name: str
    images: list[Path]
    dataset: str | None
    samples: int | None
    check: bool
    min_accuracy: float
    batch_size: int
    wait_version: str | int | None
    timeout: float
    refused_timeout: float | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Query:
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})


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
    query = Query.from_args(args)
    if query.check or query.samples or query.dataset or (not query.images and query.wait_version is None):
        query.dataset = sample_dataset(work, query.model_name, query.dataset)
    try:
        return predict(query, client, work)
    except Unreachable as err:
        if err.refused:
            raise JobError(
                f"nothing listens at {client.url} (connection refused): start `make serve` (in another "
                f"terminal), or point {named('--url')} at a running server"
            ) from None
        raise JobError(f"{err}: is {named('--url')} right? (`make serve` serves on 127.0.0.1:PORT)") from None


def predict(query: Query, client: Client, work: Work) -> int:
    """The three modes in turn: wait for a version, then classify files or test samples."""
    if query.wait_version is not None:
        wanted = wait_version(query, client, work)
        if not (query.images or query.dataset):  # waiting was the whole job: say what came
            emit(version=wanted)
    if query.images:
        if note := what_it_knows(work, query.model_name):
            log.info("%s", note)
        classify_files(query, client)
    elif query.dataset:
        classify_samples(query, client, work)
    return 0


def wait_version(query: Query, client: Client, work: Work) -> int:
    wanted = query.wait_version
    if wanted in ("latest", "stable"):
        # The newest version a server is pinned to (the canary's, during a canary), else the
        # highest on disk; or what the stable track serves (make serve follows it).
        if wanted == "latest":
            wanted = serving_config.newest_served(work, query.model_name)
        else:
            wanted = serving_config.served_version(work, query.model_name, "stable")
        if wanted is None:
            raise JobError(f"no version folders under {work.served(query.model_name)}: promote a model first")
    wait_for_version(client, wanted, query.timeout, refused=query.refused_timeout)
    return wanted


def classify_files(query: Query, client: Client) -> None:
    encoded = []
    for path in query.images:
        try:
            encoded.append(path.read_bytes())
        except OSError as err:
            raise JobError(f"cannot read {path}: {err.strerror}") from None
    for start in range(0, len(encoded), query.batch_size):
        batch = query.images[start : start + query.batch_size]
        try:
            predictions = client.classify(encoded[start : start + query.batch_size])
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


def classify_samples(query: Query, client: Client, work: Work) -> None:
    """Test samples of the query's dataset: shown, or with --check scored against --min-accuracy."""

    test = data.load(work.dataset(query.dataset), splits=("test",))["test"]
    wanted_samples = query.samples or (DEFAULT_CHECK_SAMPLES if query.check else DEFAULT_SHOW_SAMPLES)
    count = min(wanted_samples, len(test.labels))
    if count == 0:
        raise JobError(f"the test split of {query.dataset} is empty")
    images = [png.encode(test.images[i]) for i in range(count)]
    labels = test.labels[:count].astype(int)
    started = time.monotonic()
    predictions = classify_in_batches(client, images, query.batch_size)
    elapsed = time.monotonic() - started
    predicted = np.array([int(p.get("class_id", -1)) for p in predictions])
    if not query.check:
        for i, prediction in enumerate(predictions):
            show(f"sample {i} (label {data.CLASS_NAMES[labels[i]]})", prediction)
        return
    accuracy = float(np.mean(predicted == labels))
    log.info("scored %d samples in %.1fs through %s", count, elapsed, query.url)
    emit(accuracy=accuracy, samples=count)
    if accuracy < query.min_accuracy:
        raise JobError(f"accuracy {accuracy:.4f} is below --min-accuracy {query.min_accuracy:g}")
