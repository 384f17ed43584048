"""The benchmark's one HTTP client: HTTP/1.1 keep-alive connections written by hand on asyncio.

The load generator shares the CPUs with the server, so a heavy client (httpx costs milliseconds
of CPU per request here) would measure itself. Sequential latency uses one connection;
throughput uses many at once. Plain http only; every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from jobs.core.cli import JobError

T = TypeVar("T")
CONNECT_TIMEOUT = 30.0
ANSWER_TIMEOUT = 60.0
FAILURES = (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs the client on uvloop, as the server runs: the client shares the CPUs with the
    server, and asyncio's own loop cost it about a third more per request."""
    import uvloop

    return uvloop.run(coroutine)


def predict_body(images: Sequence[bytes]) -> bytes:
    """A serving_default request in the reference format, serialised once up front."""
    instances = [{"image_bytes": {"b64": base64.b64encode(image).decode("ascii")}} for image in images]
    return json.dumps({"instances": instances}).encode()


def split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise JobError(f"--url must be http://host[:port][/prefix], got {url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def request_head(method: str, host: str, path: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode("latin-1")


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server closes the connection."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip().lower() for k, v in headers.items()}
    if "content-length" not in headers:
        raise ConnectionError(f"answer without Content-Length ({lines[0]})")
    return status, int(headers["content-length"]), headers.get("connection") == "close"


def answered(status: int, answer: bytes) -> bool:
    return status == 200 and b'"predictions"' in answer


class Connection:
    """One keep-alive connection to a server's predict path, reopened when the server closes it."""

    def __init__(self, url: str, model: str):
        self.host, self.port, prefix = split_url(url)
        self.path = f"{prefix}/v1/models/{model}:predict"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0  # connections made, for tests: keep-alive means one

    async def open(self) -> Connection:
        if self.writer is None:
            connecting = asyncio.open_connection(self.host, self.port)
            self.reader, self.writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT)
            self.opened += 1
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """One request; a failure closes the connection (the next request opens a new one)."""
        await self.open()
        try:
            self.writer.write(request_head("POST", self.host, self.path, len(body)) + body)
            async with asyncio.timeout(ANSWER_TIMEOUT):  # a timer, not a task per request as wait_for
                head = await self.reader.readuntil(b"\r\n\r\n")
            status, length, close = parse_head(head)
            answer = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer


async def latencies_ms(connection: Connection, body: bytes, count: int, warmup: int = 3) -> list[float]:
    """Sequential requests on one connection: ms each, after `warmup` untimed ones; any answer
    but predictions is an error."""
    times = []
    for i in range(warmup + count):
        started = time.perf_counter()
        status, answer = await connection.post(body)
        if not answered(status, answer):
            raise JobError(f"predict answered {status}: {answer[:300]!r}")
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return times


async def load(
    url: str, model: str, bodies: list[bytes], concurrency: int, total: int, timeout: float
) -> tuple[int, int, float, list[float]]:
    """`total` requests from `concurrency` keep-alive connections, round-robin over `bodies`;
    returns (ok, errors, seconds, ms of each answered request). The connections are opened
    before the clock starts."""
    connections = [Connection(url, model) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    counts = {"sent": 0, "ok": 0, "errors": 0}
    times: list[float] = []
    deadline = time.monotonic() + timeout

    async def send_until_done(connection: Connection) -> None:
        while counts["sent"] < total and time.monotonic() < deadline:
            body = bodies[counts["sent"] % len(bodies)]
            counts["sent"] += 1
            began = time.perf_counter()
            try:
                ok = answered(*await connection.post(body))
            except FAILURES:
                ok = False
            counts["ok" if ok else "errors"] += 1
            if ok:
                times.append((time.perf_counter() - began) * 1000)
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(send_until_done(c) for c in connections))
    return counts["ok"], counts["errors"], time.perf_counter() - started, times
