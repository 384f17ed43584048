"""Where the local server's time goes under load: py-spy samples `jobs.serve` while the
benchmark's client sends one-image requests at a concurrency, then each sample is given to the
stage of the request path its innermost frame of ours (or of the HTTP stack) belongs to.

    python -m bench.profile [--requests 4000] [--concurrency 32] [--out results/profile]

Writes <out>/profile.txt (py-spy's collapsed stacks, a flame graph's input: flamegraph.pl or
speedscope read it), <out>/profile.svg (the flame graph) and prints the split per thread group
(the event loop, the signature threads) and stage, in % of all samples taken. py-spy is a dev
requirement; it runs the server as its child, so no ptrace permission is needed.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from bench import client
from bench.processes import child_env
from bench.serving import export_model, sample_images
from jobs.core.cli import JobError, parser, positive_int
from jobs.local.processes import free_ports
from jobs.predict.client import Client, wait_for_version

log = logging.getLogger("bench.profile")

WARM_UP = 200  # requests sent before the measured ones (sampled too)

# (stage, what a frame's text contains), the first match from the innermost frame outwards.
STAGES = (
    ("encode the answer", "jobs/serving/floats.py"),
    ("encode the answer", "jobs/serving/response.py"),
    ("prediction signals", "jobs/serving/signals.py"),
    ("image header check", "jobs/serving/images.py"),
    ("JSON values to tensors, base64", "jobs/serving/tensors.py"),
    ("JSON values to tensors, base64", "jobs/serving/request.py"),
    ("parse JSON", "jobs/serving/jsonbody.py"),
    ("model call", "jobs/serving/servable.py"),
    ("queue, merge, hand-off", "jobs/serving/batching.py"),
    ("metrics", "jobs/serving/metrics.py"),
    ("request handling (app, api)", "jobs/serving/app.py"),
    ("request handling (app, api)", "jobs/serving/api.py"),
    ("HTTP parse and write (httptools, uvicorn)", "httptools/"),
    ("HTTP parse and write (httptools, uvicorn)", "uvicorn/"),
    ("HTTP parse and write (httptools, uvicorn)", "jobs/serving/connections.py"),
    ("event loop, sockets (uvloop, asyncio)", "uvloop/"),
    ("event loop, sockets (uvloop, asyncio)", "asyncio/"),
)


def stage_of(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        for stage, needle in STAGES:
            if needle in frame:
                return stage
    return "other"


# A sample is of the request path when its thread runs the event loop or a signature thread's
# loop; the rest (start-up, imports, loading and warming up a version, the poller) is left out.
REQUEST_PATH = {
    "event loop thread": "run (uvloop/__init__.py",
    "signature threads": "Scheduler._loop (jobs/serving/batching.py",
}


# Waiting for work (a signature thread on its condition, the loop in epoll) is not cost, but
# py-spy does not always see such a thread as idle.
WAITING = ("Condition.wait (threading.py", "EpollSelector.select (selectors.py")


def split(collapsed: str) -> dict[tuple[str, str], int]:
    """Samples of the request path per (thread group, stage) from py-spy's raw output (with
    --threads: each stack starts with its thread's name), waits left out."""
    counts: collections.Counter = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            continue
        for group, needle in REQUEST_PATH.items():
            if any(needle in frame for frame in frames):
                counts[(group, stage_of(frames))] += int(count)
                break
    return dict(counts)


def request_path(collapsed: str) -> str:
    """The collapsed stacks of the request path alone (no start-up, no waits), each led by its
    thread's name without its id: what the flame graph shows."""
    kept: collections.Counter = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(WAITING) or not any(n in f for n in REQUEST_PATH.values() for f in frames):
            continue
        frames[0] = frames[0].split(": ", 1)[-1]  # "thread (1234): MainThread" → "MainThread"
        kept[";".join(frames)] += int(count)
    return "".join(f"{stack} {count}\n" for stack, count in sorted(kept.items()))


def render(counts: dict[tuple[str, str], int], rate: int, requests: int) -> str:
    """The split as a table: % of the request path's samples, and CPU ms per request."""
    total = sum(counts.values()) or 1
    lines = ["| thread | stage | % of samples | ms per request |", "|---|---|---:|---:|"]
    for (group, stage), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        lines.append(f"| {group} | {stage} | {100 * n / total:.1f} | {1000 * n / rate / requests:.3f} |")
    lines.append(f"| all | all | 100 | {1000 * total / rate / requests:.3f} |")
    return "\n".join(lines)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def flame_graph(collapsed: str, title: str, width: int = 1200, row: int = 16) -> str:
    """A flame graph of collapsed stacks as SVG: each frame a box as wide as its samples, its
    callers below it; hovering shows the frame and its share."""
    root: dict = {"n": 0, "kids": {}}
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        node = root
        node["n"] += int(count)
        for frame in stack.split(";"):
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += int(count)
    total = root["n"] or 1
    boxes: list[str] = []
    depth_max = [0]

    def draw(node: dict, x: float, depth: int) -> None:
        for frame, kid in sorted(node["kids"].items()):
            w = width * kid["n"] / total
            if w >= 1:
                depth_max[0] = max(depth_max[0], depth)
                short = frame if w > 7 * len(frame) else frame[: max(0, int(w / 7) - 2)] + ".." if w > 30 else ""
                name, label = _escaped(frame), _escaped(short)
                hue = 20 + zlib.crc32(frame.split(" ")[0].encode()) % 40
                boxes.append(
                    f"<g><title>{name} ({100 * kid['n'] / total:.1f} %)</title>"
                    f'<rect x="{x:.1f}" y="{{y{depth}}}" width="{w:.1f}" height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
                    f'<text x="{x + 2:.1f}" y="{{t{depth}}}">{label}</text></g>'
                )
                draw(kid, x, depth + 1)
            x += w

    draw(root, 0.0, 0)
    height = (depth_max[0] + 2) * row + 20
    text = "\n".join(boxes)
    for depth in range(depth_max[0] + 1):
        y = height - (depth + 1) * row
        text = text.replace(f'y="{{y{depth}}}"', f'y="{y}"').replace(f'y="{{t{depth}}}"', f'y="{y + row - 4}"')
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
        f'font-size="11"><text x="4" y="14">{_escaped(title)}</text>'
    )
    return head + text + "</svg>\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.prog = "python -m bench.profile"
    p.add_argument("--requests", type=positive_int, default=4000, help="one-image requests sent under the profiler")
    p.add_argument("--concurrency", type=positive_int, default=32, help="connections sending them at once")
    p.add_argument("--rate", type=positive_int, default=200, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=Path("results/profile"), help="folder for the stacks and flame graph")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise JobError("py-spy is not installed: make venv-dev")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fmnist-profile-"))
    try:
        base = scratch / "models"
        export_model(base)
        port = free_ports(1)[0]
        serve = [sys.executable, "-m", "jobs.serve", "--model-base-path", str(base), "--port", str(port)]
        raw = args.out / "profile.txt"
        command = [spy, "record", "--threads", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--", *serve]
        with open(scratch / "spy.log", "wb") as spy_log:
            spied = subprocess.Popen(command, stdout=spy_log, stderr=subprocess.STDOUT, env=child_env())
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_version(Client(url, "fmnist"), 1, 180.0, 0.5, lambda: None)
            bodies = [client.predict_body([image]) for image in sample_images(64)]
            client.run(client.load(url, "fmnist", bodies, args.concurrency, WARM_UP, 600))
            ok, errors, seconds, _ = client.run(
                client.load(url, "fmnist", bodies, args.concurrency, args.requests, 600)
            )
            log.info("%d ok, %d errors in %.1f s (%.0f/s) under py-spy", ok, errors, seconds, ok / seconds)
            print(f"requests={ok} errors={errors} seconds={seconds:.1f} load_average_1m={os.getloadavg()[0]:.2f}")
        finally:
            server = [
                int(pid)
                for pid in subprocess.run(
                    ["pgrep", "-P", str(spied.pid)], capture_output=True, text=True
                ).stdout.split()
            ]
            for pid in server:
                os.kill(pid, signal.SIGTERM)
            spied.wait(timeout=120)
        print(render(split(raw.read_text()), args.rate, ok + WARM_UP))
        svg = args.out / "profile.svg"
        title = f"jobs.serve, the request path: {ok} one-image requests at concurrency {args.concurrency}"
        svg.write_text(flame_graph(request_path(raw.read_text()), title))
        print(f"stacks: {raw}; flame graph: {svg}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
