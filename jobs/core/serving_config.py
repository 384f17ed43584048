"""TF Serving's model config file: which models a server loads, from where, which versions.

`tensorflow_model_server --model_config_file=F --model_config_file_poll_wait_seconds=S` starts
at once when F lists no model (a file with only a comment), opens its ports, and re-reads F
every S seconds; from the first read that lists a model on, it loads that model's versions.
With `--model_base_path` instead, it would not open a port before a version exists.

The file sits on the shared volume beside the versions (`<work>/models/serving.config`, see
`path`). The promote step writes it after each promotion; a server's init container creates
the placeholder only where none exists. The text is protobuf text format of TF Serving's
`ModelServerConfig`; every write is whole (temp file + rename), so a polling server never
reads half a file. A version policy is `latest` (the highest version) or specific versions,
so that a canary can pin a version per track of servers (each track reads its own file).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

from jobs.core.cli import JobError
from jobs.core.files import fsync_dir, write_text
from jobs.core.paths import MODEL_NAME, Work, versions

log = logging.getLogger("jobs.serving_config")

# What the file says before any model exists: parses as an empty ModelServerConfig. Not a
# zero-byte file: TF Serving reads the file through a memory map, which fails on zero bytes.
PLACEHOLDER = "# No model is served yet: the pipeline's promote step writes this file.\n"


def path(work: Work) -> Path:
    """The config file of the model servers, beside the model folders."""
    return work.serving_config("stable")


@dataclasses.dataclass(frozen=True)
class Model:
    """One model a server loads: its name in URLs, the folder of its numeric versions as the
    server sees it (an absolute path), and which versions (none given: the latest one)."""

    name: str
    base_path: str
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise JobError(f"model name {self.name!r} must be letters, digits, '-', '_' or '.'")
        if not self.base_path.startswith("/") or any(c in self.base_path for c in '"\\\n'):
            raise JobError(f"base path {self.base_path!r} must be an absolute path without quotes")
        if any(not isinstance(v, int) or v < 0 for v in self.versions):
            raise JobError(f"versions must be whole numbers: {self.versions!r}")


def render(models: Sequence[Model]) -> str:
    """The ModelServerConfig text for these models (none: the placeholder)."""
    if not models:
        return PLACEHOLDER
    lines = [
        "# Written by the pipeline (jobs.core.serving_config); servers re-read it on their own.",
        "model_config_list {",
    ]
    for model in models:
        if model.versions:
            policy = ["specific {", *(f"  versions: {v}" for v in sorted(set(model.versions))), "}"]
        else:
            policy = ["latest {", "  num_versions: 1", "}"]
        lines += [
            "  config {",
            f'    name: "{model.name}"',
            f'    base_path: "{model.base_path}"',
            '    model_platform: "tensorflow"',
            "    model_version_policy {",
            *(f"      {line}" for line in policy),
            "    }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(target: Path, text: str) -> None:
    """Replaces `target` with `text` in one rename: readers see the old file or the new one."""
    write_text(target, text, mode=0o644)
    fsync_dir(target.parent)


def serve_latest(work: Work, name: str = MODEL_NAME) -> Path:
    """Points every server at the newest version of `name` (what a promotion, a rollback or the
    end of a canary means): the stable servers' file, and the canary's when there is one."""
    for track in TRACKS:
        if track == "stable" or track_path(work, track).exists():
            pin(work, track, None, name)
    return path(work)


# -- tracks: the stable servers and the canary ----------------------------------------------

TRACKS = ("stable", "canary")


def track_path(work: Work, track: str) -> Path:
    """The config file of one track's servers: `serving.config` (stable) or
    `serving-canary.config` (the canary replica, components/canary)."""
    if track not in TRACKS:
        raise JobError(f"unknown serving track {track!r} (one of {', '.join(TRACKS)})")
    return work.serving_config(track)


def pin(work: Work, track: str, version: int | None, name: str = MODEL_NAME) -> Path:
    """Points one track's servers at `version` of `name` (None: the latest)."""
    target = track_path(work, track)
    versions = (version,) if version is not None else ()
    write(target, render([Model(name, str(work.served(name).absolute()), versions)]))
    return target


# Longer than a server takes to re-read its config file: TF Serving's
# --model_config_file_poll_wait_seconds (5 in kustomize/base/serving.yaml) plus the reload.
# (jobs.serve reads its config file and its folder in one poll.)
SETTLE_SECONDS = 8.0


def settle(seconds: float) -> None:
    """Gives every server time to re-read its config file (tests replace this with a clock)."""
    time.sleep(seconds)


def hold(work: Work, track: str, version: int, name: str = MODEL_NAME) -> None:
    """Pins one track's servers to `version` before another version is published and, if the
    pin is new to them, waits until they have read it: TF Serving polls this file and the model
    folder on separate timers, so a version published before the pin is read is loaded as the
    latest one."""
    if pinned(track_path(work, track), name) == (version,):
        return
    pin(work, track, version, name)
    log.info("%s servers pinned to version %d; %g s to read it", track, version, SETTLE_SECONDS)
    settle(SETTLE_SECONDS)


_CONFIG = re.compile(r"config\s*\{(?P<body>(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}", re.DOTALL)


def policies(text: str) -> dict[str, tuple[int, ...]]:
    """Each model's pinned versions in a config this module wrote (no pin: `()`, the latest)."""
    found = {}
    for match in _CONFIG.finditer(text):
        body = match["body"]
        name = re.search(r'\bname:\s*"([^"]*)"', body)
        if name is None:
            continue
        specific = re.search(r"specific\s*\{([^{}]*)\}", body)
        pins = tuple(int(v) for v in re.findall(r"versions:\s*(\d+)", specific[1])) if specific else ()
        found[name[1]] = pins
    return found


def pinned(target: Path, name: str = MODEL_NAME) -> tuple[int, ...] | None:
    """The versions `target` pins for `name`: `()` for the latest, None when the file is
    missing, unreadable or does not list the model (the placeholder)."""
    try:
        text = target.read_bytes().decode()
    except OSError:
        return None
    except UnicodeDecodeError:
        raise JobError(
            f"{target} is not a model config (not UTF-8 text): make canary-end rewrites it from the version folders"
        ) from None
    return policies(text).get(name)


def damaged(target: Path) -> bool:
    """A config file that is there but not text (`pinned` refuses it)."""
    try:
        target.read_bytes().decode()
    except OSError:
        return False
    except UnicodeDecodeError:
        return True
    return False


def served_version(work: Work, name: str = MODEL_NAME, track: str = "stable") -> int | None:
    """The version a track's servers serve: the highest pinned one that exists, else the
    highest on disk (TF Serving's `latest`); None before the first promotion."""
    on_disk = versions(work.served(name))
    pins = [v for v in pinned(track_path(work, track), name) or () if v in on_disk]
    if pins:
        return max(pins)
    return max(on_disk, default=None)


def newest_served(work: Work, name: str = MODEL_NAME) -> int | None:
    """The newest version any server is meant to serve: the canary's during a canary, else
    the stable one's (a version pinned by hand may be below the newest on disk)."""
    tracks = [t for t in TRACKS if t == "stable" or track_path(work, t).exists()]
    found = [v for v in (served_version(work, name, t) for t in tracks) if v is not None]
    return max(found, default=None)
