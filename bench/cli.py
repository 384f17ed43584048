"""Benchmark the system: training scaling, input pipeline, serving, end to end, accuracy.

    python -m bench                      everything, about 11 minutes on 2 cores
    python -m bench --quick              the same code paths at tiny sizes (the smoke test)
    python -m bench --sections serving --url http://127.0.0.1:8501 --model-dir <SavedModel>
                                         serving only, against a running TF Serving

Every figure is the median of repeated measurements, with their min and max; every ratio is
computed within one repeat from a baseline and a candidate measured back to back, then
summarised the same way. Sections (one module each):

  training   images/s of the default CNN (jobs.train, synthetic data of Fashion-MNIST's shape):
             one process on all cores vs WORKERS MultiWorkerMirroredStrategy processes on the
             same cores, read from each run's history.json without the first (warm-up) epoch,
             with jobs.train's custom loop and with the previous one (Keras fit) in each
             repeat; then a step split inside WORKERS worker processes (python -m bench.worker)
  input      images/s the tf.data training pipeline delivers alone, against what training used
  serving    p50/p99 latency for 1 and 32 images per request and throughput at concurrency
             1, 8, 32 against the local server (or --url), the same SavedModel called
             in-process as the baseline
  e2e        `python -m jobs.local --dataset synthetic` at default settings: wall time per stage
  accuracy   each candidate's test accuracy on real Fashion-MNIST, when it is on this machine

Results: results/bench-<time>.json (machine, versions, settings, figures, raw samples) and a
markdown table on stdout (also results/bench-<time>.md); python -m bench.report puts the
latest into docs/benchmarks.md. Load goes to 127.0.0.1 only, unless --url names another
server; every request loop is bounded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import results
from bench.sizes import FULL, QUICK, Sizes
from jobs import steps
from jobs.core.cli import JobError, csv_list, parser, positive_int
from jobs.core.paths import MODEL_NAME, Work

log = logging.getLogger("bench")

SECTIONS = ("training", "input", "serving", "e2e", "accuracy")


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.prog = "python -m bench"  # not bench.__main__
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for the JSON and markdown results")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that every path runs")
    p.add_argument(
        "--sections", type=csv_list(SECTIONS), default=",".join(SECTIONS), help="comma-separated sections to run"
    )
    p.add_argument("--workers", type=positive_int, default=steps.WORKERS, help="MultiWorkerMirroredStrategy processes")
    p.add_argument("--repeats", type=positive_int, help="repeats of each measurement (default: 3, --quick 1)")
    p.add_argument(
        "--e2e-repeats", type=positive_int, help="end-to-end runs (default: 3, --quick 1; one takes minutes)"
    )
    p.add_argument("--url", help="serving: measure this TF Serving base URL instead of a local server")
    p.add_argument("--model-name", default=MODEL_NAME, help="serving: the model name in the URL paths")
    p.add_argument(
        "--model-dir", type=Path, help="serving with --url: the served SavedModel, for the in-process baseline"
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".work"),
        help="accuracy: where to look for real Fashion-MNIST (never downloaded here)",
    )
    p.add_argument("--scratch", type=Path, help="scratch folder (default: a temp dir, deleted afterwards)")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs the jobs")
    return p


def settings(args: argparse.Namespace) -> tuple[Sizes, list[str]]:
    """The sizes (--quick, --repeats) and the sections (--url alone: serving only)."""
    if args.model_dir is not None and not (args.model_dir / "saved_model.pb").exists():
        raise JobError(f"--model-dir {args.model_dir} holds no saved_model.pb")
    sizes = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        sizes, repeats=args.repeats or sizes.repeats, e2e_repeats=args.e2e_repeats or sizes.e2e_repeats
    )
    sections = args.sections
    if args.url and sections == list(SECTIONS):
        sections = ["serving"]
    return sizes, sections


def new_report(args: argparse.Namespace, sizes: Sizes, sections: list[str]) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": results.machine(),
        "versions": results.versions(),
        "settings": {
            "quick": args.quick,
            "sections": sections,
            "workers": args.workers,
            "url": args.url,
            **dataclasses.asdict(sizes),
        },
        "sections": {},
    }


def timed_section(report: dict, name: str, fn: Callable[[], None]) -> None:
    """Runs one section, noting its time and the load average before and after."""
    log.info("section %s", name)
    began, load_before = time.monotonic(), os.getloadavg()[0]
    fn()
    report["sections"][name] = {
        "seconds": round(time.monotonic() - began, 1),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


Section = tuple[str, Callable[[results.Figures], None]]


def plan(args, sizes: Sizes, sections: list[str], scratch: Path) -> list[Section]:
    """The asked-for sections in table order; the input pipeline is measured inside training
    when both run (its headroom is against training's rate), alone otherwise."""
    from bench import accuracy, e2e, pipeline, serving, training

    if "input" in sections:
        from jobs.core.cpus import configure_threads

        configure_threads()  # this process measures the input pipeline
    meter = pipeline.meter(sizes.train_size, sizes.pipeline_batches) if "input" in sections else None
    python, work = args.python, Work(scratch / "train")
    steps: list[Section] = []
    if "training" in sections:
        steps.append(("training", lambda f: training.run(f, sizes, work, args.workers, python, meter)))
    elif meter is not None:
        steps.append(("input", lambda f: pipeline.run(f, sizes, meter)))
    if "serving" in sections:
        served, model, model_dir = Work(scratch / "serve"), args.model_name, args.model_dir
        steps.append(("serving", lambda f: serving.run(f, sizes, served, python, args.url, model, model_dir)))
    if "e2e" in sections:
        steps.append(("e2e", lambda f: e2e.run(f, sizes, scratch, python)))
    if "accuracy" in sections:
        data_work = Work(args.work_dir.resolve())
        steps.append(("accuracy", lambda f: accuracy.run(f, sizes, data_work, scratch, python)))
    return steps


def run_in_turn(steps: list[Section], report: dict) -> results.Figures:
    figures = results.Figures()
    for name, fn in steps:
        timed_section(report, name, lambda fn=fn: fn(figures))
    return figures


def run_together(steps: list[Section], report: dict) -> results.Figures:
    """Every section at once, each in a thread with its own figures, merged in table order:
    the quick mode's way to check every path in less time (its figures measure nothing)."""
    parts = [results.Figures() for _ in steps]
    errors: list[BaseException] = []

    def section(name: str, fn: Callable[[results.Figures], None], part: results.Figures) -> None:
        try:
            timed_section(report, name, lambda: fn(part))
        except BaseException as err:  # raised in the main thread below
            errors.append(err)

    threads = [
        threading.Thread(target=section, args=(name, fn, part), name=name, daemon=True)
        for (name, fn), part in zip(steps, parts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # daemon threads: Ctrl-C here ends the process, and its jobs follow it
    if errors:
        raise errors[0]
    figures = results.Figures()
    for part in parts:
        figures.items.update(part.items)
    report["sections"] = {name: report["sections"][name] for name, _ in steps}
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sizes, sections = settings(args)
    started, stamp = time.monotonic(), time.strftime("%Y%m%d-%H%M%S")
    report = new_report(args, sizes, sections)
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="fmnist-bench-"))).resolve()
    try:
        steps = plan(args, sizes, sections, scratch)
        figures = (run_together if sizes.together else run_in_turn)(steps, report)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["figures"] = figures.as_json()
    path = results.write(args.out, stamp, report)
    print(results.render(report), flush=True)
    print(f"\nresults: {path}", flush=True)
    return 0
