"""Figures (medians of repeats with min and max, checked against targets), the machine and
versions they were measured on, and the results file: results/bench-<time>.json and .md."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.core.cpus import cpu_count

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tensorflow", "tf-keras", "mlflow", "numpy", "httpx", "starlette", "uvicorn")
TABLE_HEAD = ("| figure | median | min – max | n | unit | target |", "|---|---:|---:|---:|---|---|")


@dataclasses.dataclass
class Figure:
    key: str
    label: str
    unit: str
    samples: list[float] = dataclasses.field(default_factory=list)
    target: str = ""  # e.g. ">= 0.8"
    note: str = ""  # what limits it, or why it is missing
    text: str = ""  # a non-numeric value, e.g. "not available"

    def summary(self) -> dict:
        out: dict[str, Any] = {
            "label": self.label,
            "unit": self.unit,
            "n": len(self.samples),
            "samples": [round(s, 6) for s in self.samples],
        }
        if self.samples:
            out.update(median=statistics.median(self.samples), min=min(self.samples), max=max(self.samples))
        if self.target:
            out["target"] = self.target
            out["met"] = self.met()
        if self.note:
            out["note"] = self.note
        if self.text:
            out["text"] = self.text
        return out

    def met(self) -> bool | None:
        if not self.target or not self.samples:
            return None
        op, threshold = self.target.split()
        value = statistics.median(self.samples)
        return value >= float(threshold) if op == ">=" else value <= float(threshold)


class Figures:
    """Figures in the order they were first added, which is the table's order."""

    def __init__(self):
        self.items: dict[str, Figure] = {}

    def add(self, key: str, label: str, unit: str, value: float | None = None, **kwargs) -> Figure:
        figure = self.items.get(key)
        if figure is None:
            figure = self.items[key] = Figure(key, label, unit, **kwargs)
        if value is not None:
            figure.samples.append(float(value))
        return figure

    def text(self, key: str, label: str, text: str, **kwargs) -> Figure:
        return self.add(key, label, "", text=text, **kwargs)

    def as_json(self) -> dict:
        return {key: figure.summary() for key, figure in self.items.items()}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def fmt(value: float) -> str:
    """Three significant figures, thousands separated: 11,619, 15.8, 0.529."""
    if value == int(value) and abs(value) < 1000:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(figures: dict[str, dict]) -> str:
    """The figures as a markdown table: median, min-max, n, target."""
    rows = list(TABLE_HEAD)
    for figure in figures.values():
        if figure.get("n"):
            median = fmt(figure["median"])
            spread = f"{fmt(figure['min'])} – {fmt(figure['max'])}"
        else:
            median, spread = figure.get("text", "—"), ""
        target = figure.get("target", "")
        if target and figure.get("met") is not None:
            target += " ✔" if figure["met"] else " ✘ missed"
        rows.append(f"| {figure['label']} | {median} | {spread} | {figure['n'] or ''} | {figure['unit']} | {target} |")
    return "\n".join(rows)


def heading(report: dict) -> str:
    """One line: when, on what, under which load, how long."""
    m, v = report["machine"], report["versions"]
    return (
        f"{report['date'][:10]}, {m['cpu_model']}, {m['cores']} cores ({m['usable_cpus']} usable), "
        f"{m['memory_gib']} GiB, {m['os']}; Python {v['python']}, TensorFlow {v['tensorflow']}, "
        f"tf-keras {v['tf-keras']}, MLflow {v['mlflow']}; "
        f"load average {m['load_average_at_start'][0]} at start, {m['load_average_at_end'][0]} at end; "
        f"{'quick mode, ' if report['settings']['quick'] else ''}{report['seconds']:.0f} s in all"
    )


def render(report: dict) -> str:
    return heading(report) + "\n\n" + table(report["figures"])


def machine() -> dict:
    import psutil

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cpus": cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["commit"] = _commit()
    return found


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10)
        if commit.stdout.strip():
            return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    return None


def write(out: Path, stamp: str, report: dict) -> Path:
    """bench-<stamp>.json (figures in table order, not sorted) and bench-<stamp>.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{stamp}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out)
    with os.fdopen(fd, "w") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
    (out / f"bench-{stamp}.md").write_text(render(report) + "\n")
    return path


def latest(out: Path) -> Path | None:
    """The newest results file in `out` (the names sort by time)."""
    found = sorted(out.glob("bench-*.json"))
    return found[-1] if found else None
