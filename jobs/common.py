"""What every job shares: CLI plumbing, logging, atomic writes, CPU sizing."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("jobs")


class JobError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


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
        """One line instead of argparse's usage dump."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for hook in self.after_parse:
            hook(parsed)
        return parsed


def parser(description: str) -> argparse.ArgumentParser:
    prog = (
        f"python -m {sys.modules['__main__'].__spec__.name}"
        if getattr(sys.modules["__main__"], "__spec__", None)
        else None
    )
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
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
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
    from jobs.paths import Work
    from jobs.tracking import local_uri

    work = Work(Path(args.work_dir))
    if (work.mlflow / "mlflow.db").is_file():
        os.environ["MLFLOW_TRACKING_URI"] = local_uri(work)
        log.info(
            "tracking into %s (the work dir's store; MLFLOW_TRACKING_URI is not set)", os.environ["MLFLOW_TRACKING_URI"]
        )


def cpu_count() -> int:
    """CPUs this process may use: the env override, else the cgroup quota and affinity."""
    override = os.environ.get("FMNIST_THREADS", "").strip()
    if override:
        try:
            return max(1, int(float(override)))
        except ValueError:
            raise JobError(f"FMNIST_THREADS must be a number, got {override!r}") from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    return cpus


def duration(seconds: float) -> str:
    """4.2 s, 42 s, 3 min 05 s: for people."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def available_memory() -> int | None:
    """Bytes this process could still use: MemAvailable within the cgroup's limit on Linux,
    the physical memory elsewhere; None if unknown."""
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            room = max(0, int(limit) - used)
            available = room if available is None else min(available, room)
    return available


def configure_threads() -> int:
    """Sizes TensorFlow's thread pools to the CPUs we may use (TF reads host cores otherwise)."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.WARNING)  # per-collective INFO lines drown the progress
    threads = cpu_count()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(threads, 2)))
    return threads


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yields a temp dir beside `target`; on success it is renamed to `target` in one step.

    Readers see either no `target` or a complete one. If `target` exists it is replaced: the
    old one is first renamed aside, so the window without a `target` is two renames long.
    On failure the temp dir is removed and `target` is untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from other readers
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, payload: Any) -> None:
    """Writes JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise JobError(f"{path} is not valid JSON: {err}") from None
