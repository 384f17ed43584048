"""Serving section: p50/p99 latency for 1 and 32 images per request and throughput at
concurrency 1, 8, 32 against the local server (`jobs.serve`) or --url, with the same
SavedModel called in a process of its own, with the server's thread pools, as the baseline
(bench.inprocess)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from bench import client
from bench.inprocess import InProcess
from bench.processes import STOP_GRACE_SECONDS, child_env
from bench.results import Figures, percentile
from bench.sizes import Sizes
from jobs.core.cli import JobError
from jobs.core.paths import Work
from jobs.core.png import encode
from jobs.ingest import data
from jobs.local.processes import Process, free_ports, server_argv, stop
from jobs.predict.client import Client, wait_for_version

log = logging.getLogger("bench.serving")

CONCURRENCY = (1, 8, 32)
SERVER_START_TIMEOUT = 180.0
URL_TIMEOUT = 60.0


@dataclasses.dataclass
class Target:
    url: str
    model: str
    where: str  # in the figures' labels
    model_dir: Path | None  # the served SavedModel, for the in-process baseline
    pid: int | None = None  # the local server's process, whose CPU time is read
    baseline: InProcess | None = None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None where it cannot be read."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def sample_images(count: int) -> list[bytes]:
    return [encode(pixels) for pixels in data.synthetic(count, 10, seed=1)["train"].images]


def export_model(target: Path) -> Path:
    """An untrained cnn exported like a promoted one: timing does not depend on the weights."""
    from jobs.train import export, models

    version = target / "1"
    export.save(models.build("cnn"), version)
    return version


@contextlib.contextmanager
def local_server(base: Path, model: str, logs: Path, python: str) -> Iterator[tuple[str, int]]:
    """`jobs.serve` on a free 127.0.0.1 port and its pid, yielded once version 1 is AVAILABLE."""
    port = free_ports(1)[0]
    process = Process(server_argv(python, base, port, model), logs / "serve.log", "[serve]", False, child_env())

    def running() -> None:
        if process.poll() is not None:
            raise JobError(f"the model server exited\n{process.describe_failure()}")

    try:
        wait_for_version(Client(f"http://127.0.0.1:{port}", model), 1, SERVER_START_TIMEOUT, 0.5, running)
        yield f"http://127.0.0.1:{port}", process.popen.pid
    finally:
        stop([process], STOP_GRACE_SECONDS)


def served_version(server: Client) -> int:
    """The highest version a running server reports (the one --url serves)."""
    try:
        versions = [int(entry["version"]) for entry in server.status().get("model_version_status", [])]
    except (KeyError, TypeError, ValueError):
        versions = []
    if not versions:
        raise JobError(f"{server.url} reports no version of {server.model}")
    return max(versions)


def server_latencies_ms(target: Target, body: bytes, count: int) -> list[float]:
    async def measure() -> list[float]:
        connection = client.Connection(target.url, target.model)
        try:
            return await client.latencies_ms(connection, body, count)
        finally:
            connection.close()

    return client.run(measure())


@contextlib.contextmanager
def target(work: Work, python: str, url: str | None, model: str, model_dir: Path | None) -> Iterator[Target]:
    """The server to measure: a local one on an exported cnn, or the one at --url."""
    if url is None:
        model_dir = export_model(work.served())
        with local_server(work.served(), model, work.root / "logs", python) as (local, pid):
            yield Target(local, model, "local server", model_dir, pid)
        return
    url = url.rstrip("/")
    remote = Client(url, model)
    wait_for_version(remote, served_version(remote), URL_TIMEOUT)
    yield Target(url, model, "server at --url", model_dir)


@contextlib.contextmanager
def baseline(model_dir: Path | None, python: str) -> Iterator[InProcess | None]:
    if model_dir is None:
        yield None
        return
    inprocess = InProcess(model_dir, python, child_env())
    try:
        yield inprocess
    finally:
        inprocess.close()


def run(figures: Figures, sizes: Sizes, work: Work, python: str, url: str | None, model: str, model_dir: Path | None):
    images = sample_images(64)
    with target(work, python, url, model, model_dir) as server, baseline(server.model_dir, python) as inprocess:
        server.baseline = inprocess
        if server.baseline is not None:
            label = "in-process baseline: TensorFlow intra-op threads (as the local server's default)"
            figures.add("serve.inproc.threads", label, "threads", server.baseline.threads)
        for rep in range(sizes.repeats):
            for n, count in sizes.latency_requests.items():
                log.info("serving: latency with %d image(s) per request, repeat %d/%d", n, rep + 1, sizes.repeats)
                latency(figures, server, images[:n], count)
            inprocess = None
            if server.baseline is not None:
                inprocess = inprocess_throughput(figures, server.baseline, 32, sizes.latency_requests[32])
            bodies = [client.predict_body([image]) for image in images]
            for concurrency in CONCURRENCY:
                rate = throughput(figures, server, bodies, concurrency, sizes.load_requests[concurrency], sizes.timeout)
                if concurrency == 32 and inprocess:
                    label = "throughput at concurrency 32, 1 image/request ÷ in-process at 32 images/call"
                    figures.add("serve.throughput_ratio.c32", label, "ratio", rate / inprocess, target=">= 0.5")
    if server.baseline is None:
        figures.text("serve.baseline", "in-process baseline", "skipped (no --model-dir)")


def latency(figures: Figures, server: Target, images: list[bytes], count: int) -> None:
    """Server latency for one request size, then the in-process baseline and the overhead."""
    n = len(images)
    images_text = "1 image" if n == 1 else f"{n} images"
    remote = server_latencies_ms(server, client.predict_body(images), count)
    add_latency(figures, f"server{n}", f"{server.where}, {images_text}/request", remote)
    if server.baseline is None:
        return
    local = server.baseline.latencies_ms(n, count)
    add_latency(figures, f"inproc{n}", f"in-process, {images_text}/call", local)
    p50_server, p50_local = percentile(remote, 50), percentile(local, 50)
    label = f"server overhead at p50, {images_text} (server − in-process)"
    figures.add(f"serve.overhead{n}.p50", label, "ms", p50_server - p50_local, target="<= 2" if n == 1 else "")
    ratio_target = "<= 1.5" if n == 1 else ""
    label = f"server ÷ in-process at p50, {images_text}"
    figures.add(f"serve.ratio{n}.p50", label, "ratio", p50_server / p50_local, target=ratio_target)


def add_latency(figures: Figures, key: str, label: str, times: list[float]) -> None:
    figures.add(f"serve.{key}.p50", f"p50 latency, {label}", "ms", percentile(times, 50))
    figures.add(f"serve.{key}.p99", f"p99 latency, {label}", "ms", percentile(times, 99))


def inprocess_throughput(figures: Figures, baseline: InProcess, images: int, calls: int) -> float:
    rate = baseline.throughput(images, calls)
    label = f"in-process throughput, {images} images/call, sequential"
    figures.add(f"serve.inproc.throughput{images}", label, "images/s", rate)
    return rate


def throughput(
    figures: Figures, server: Target, bodies: list[bytes], concurrency: int, total: int, timeout: float
) -> float:
    """Images/s at `concurrency`, its p99 and errors, and the server's CPU time per request."""
    log.info("serving: %d requests at concurrency %d", total, concurrency)
    cpu_before = cpu_seconds(server.pid)
    ok, errors, seconds, times = client.run(client.load(server.url, server.model, bodies, concurrency, total, timeout))
    cpu_after = cpu_seconds(server.pid)
    label = f"{server.where} throughput, concurrency {concurrency}, 1 image/request"
    figures.add(f"serve.throughput.c{concurrency}", label, "images/s", ok / seconds)
    if times:
        label = f"p99 latency at concurrency {concurrency}, 1 image/request"
        figures.add(f"serve.load.c{concurrency}.p99", label, "ms", percentile(times, 99))
    if cpu_before is not None and cpu_after is not None and ok + errors:
        label = f"server CPU time per request at concurrency {concurrency}"
        figures.add(f"serve.cpu.c{concurrency}", label, "ms", (cpu_after - cpu_before) * 1000 / (ok + errors))
    label = f"errors at concurrency {concurrency}"
    figures.add(f"serve.errors.c{concurrency}", label, "requests", errors, target="<= 0" if concurrency == 32 else "")
    return ok / seconds
