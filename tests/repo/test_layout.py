"""The shape of jobs/: packages by stage, each listing its modules, and the image package apart
from the benchmarks. The imports between them are `make lint`'s (pyproject.toml's contracts)."""

from __future__ import annotations

import ast
import re

from tests.helpers import ROOT

JOBS = ROOT / "jobs"


def test_every_package_lists_each_of_its_modules_in_its_docstring():
    """A package's __init__ is its map: one line per module, so docs/layout.md and the README's
    map (generated from these docstrings) name every module."""
    for package in sorted(p.parent for p in JOBS.glob("*/**/__init__.py")):
        doc = ast.parse((package / "__init__.py").read_text()).body[0].value.value  # as written, indented
        listed = set(re.findall(r"^    (\w+)\s", doc, re.M))
        present = {p.stem for p in package.glob("*.py")} - {"__init__"}
        present |= {p.parent.name for p in package.glob("*/__init__.py")}  # its packages, if any
        name = package.relative_to(ROOT)
        assert present <= listed, f"{name}/__init__.py does not list {sorted(present - listed)}"
        assert listed <= present, f"{name}/__init__.py lists modules that are gone: {listed - present}"


def test_the_root_of_jobs_holds_only_entries_and_the_steps():
    """Beside the packages, jobs/ has the steps' definitions and thin entry modules that run
    a package's main (so `python -m jobs.<step>` stays as it is)."""
    for path in JOBS.glob("*.py"):
        if path.name in ("__init__.py", "steps.py"):
            continue
        tree = ast.parse(path.read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not functions, f"{path.name} is an entry: its code belongs in a package"


def test_the_benchmark_is_not_in_the_image_package():
    """bench/ measures the jobs; jobs/ is what the image runs, and never imports bench."""
    assert not (JOBS / "bench.py").exists() and not (JOBS / "common.py").exists()
    users = [
        str(p.relative_to(ROOT))
        for p in JOBS.rglob("*.py")
        if re.search(r"^\s*(from|import) bench\b", p.read_text(), re.M)
    ]
    assert not users, users


def test_the_readme_is_a_first_screen_and_a_map():
    """README: what it is, the quick start, the map, links into docs/; the rest lives in docs/.
    A section that outgrows it moves there rather than lengthening the front page."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the longest section into docs/"
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)", "\n".join(lines)))
    written = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    assert written <= linked, f"README.md links no {sorted(written - linked)}"
