"""What every job's command line shares: the parser and its argument types, running a main
(one `error:` line and exit 1 for a JobError), `name=value` results, durations for people."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jobs.core.paths import Work

log = logging.getLogger("jobs")

# Set by the Makefile's scripts: which of this command's flags a knob became, e.g.
# "DATASET=--dataset EPOCHS=--epochs", so that an error names what the user typed and points at
# `make help`. Read once and removed, so that the jobs this one starts speak of their own flags.
KNOBS_ENV = "FMNIST_KNOBS"
_KNOBS = {
    flag: knob
    for knob, _, flag in (pair.partition("=") for pair in os.environ.pop(KNOBS_ENV, "").split())
    if knob and flag
}


def named(flag: str) -> str:
    """What the user typed for `flag`: its knob (`make local DATASET=...`), or the flag itself."""
    return _KNOBS.get(flag, flag)


class JobError(Exception):
    """A failure the user can act on: printed as one line, exit status `code` (1)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (required flags, switches)."""

    def _get_help_string(self, action):
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_parse: list[Callable[[argparse.Namespace], None]] = []

    def error(self, message: str):
        """One line instead of argparse's usage dump, naming the knob a flag came from."""
        if _KNOBS:
            message = re.sub(r"^argument (-[\w-]+)(?:/\S+)?:", lambda m: f"{named(m[1])}:", message)
            self.exit(2, f"error: {message} (make help lists the knobs)\n")
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for hook in self.after_parse:
            hook(parsed)
        return parsed


def parser(description: str) -> argparse.ArgumentParser:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    # `python -m jobs.train` runs the package's __main__: the command is the package's name.
    prog = f"python -m {spec.name.removesuffix('.__main__')}" if spec else None
    return _Parser(prog=prog, description=description, formatter_class=_Formatter)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Runs a job's main with logging set up; a JobError ends as one line and exit 1."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return main(argv)
    except JobError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:  # Ctrl-C: asked for, so no error
        print("stopped (Ctrl-C)", file=sys.stderr)
        return 130


def abort(message: str, code: int = 1) -> NoReturn:
    """Ends the process now with one `error:` line, skipping the interpreter's shutdown (for
    a process whose runtime is broken beyond a clean exit)."""
    logging.shutdown()
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def emit(**metrics: Any) -> None:
    """Final figures as name=value lines on stdout (what metrics collectors read)."""
    for name, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{name}={value}", flush=True)


def _number(kind: type, text: str, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text}")
    return value


def fraction(text: str) -> float:
    value = _number(float, text, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def port_number(text: str) -> int:
    value = _number(int, text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535: {value}")
    return value


def csv_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type for comma-separated names from a fixed set."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError("empty list")
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})")
        return list(dict.fromkeys(names))

    return parse


def version_or(word: str, minimum: int) -> Callable[[str], str | int]:
    """An argparse type for a model version number (from `minimum` on) or the word `word`."""

    def parse(text: str) -> str | int:
        if text == word:
            return text
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a version number or '{word}', got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"version numbers start at {minimum}: {value}")
        return value

    return parse


def path_arg(text: str) -> Path:
    """A path that is not the empty string (which Path would take for the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give a folder")
    return Path(text)


def plain_name(text: str) -> str:
    """A name that is safe as one path component (run ids become folders)."""
    if not text or "/" in text or text in (".", "..") or text.startswith("."):
        raise argparse.ArgumentTypeError(f"must be a plain name, not a path: {text!r}")
    return text


def add_run_arguments(p: argparse.ArgumentParser, candidates: Sequence[str] | None = None) -> None:
    """The flags that place a step in a pipeline run: the shared volume, the run, the dataset
    and, for steps over several candidates, which ones."""
    p.add_argument("--work-dir", type=Path, required=True, help="the shared volume")
    p.add_argument("--run-id", type=plain_name, required=True, help="the pipeline run (a folder under <work-dir>/runs)")
    p.add_argument("--dataset", default="fashion_mnist", help="the ingested dataset under <work-dir>/data")
    if candidates:
        p.add_argument(
            "--models", type=csv_list(candidates), default=",".join(candidates), help="comma-separated candidates"
        )
    if isinstance(p, _Parser):
        p.after_parse.append(track_into_work_dir)


def track_into_work_dir(args: argparse.Namespace) -> None:
    """A step run by hand, with no MLFLOW_TRACKING_URI, tracks into the store that `make local`
    made in its work dir, if there is one (as the step does inside a local run)."""
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return

    work = Work(Path(args.work_dir))
    if (work.mlflow / "mlflow.db").is_file():
        os.environ["MLFLOW_TRACKING_URI"] = work.mlflow_uri
        log.info(
            "tracking into %s (the work dir's store; MLFLOW_TRACKING_URI is not set)", os.environ["MLFLOW_TRACKING_URI"]
        )


def duration(seconds: float) -> str:
    """4.2 s, 42 s, 3 min 05 s: for people."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
