"""Helpers for the abuse tests: raw sockets, costly-but-small images, metrics and memory."""

from __future__ import annotations

import base64
import functools
import io
import json
import socket
import time
from urllib.parse import urlsplit

import httpx

from .conftest import MODEL

PREDICT = f"/v1/models/{MODEL}:predict"
SIDE = 4096  # the largest image the default per-image limit allows


@functools.cache
def bomb_png(side: int = SIDE) -> bytes:
    """A 1-bit PNG of side x side: a couple of KiB that decode to side² pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def heavy_body(images: int) -> bytes:
    data = base64.b64encode(bomb_png()).decode()
    return json.dumps({"instances": [{"b64": data}] * images}).encode()


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, length: int | None = None, extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from a raw socket: status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    top, rest = data.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (any answer before is read)."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if not sock.recv(65536):
                    return True
            except TimeoutError:
                return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the server's Prometheus metrics (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/monitoring/prometheus/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return sample.value
    return 0.0


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss
