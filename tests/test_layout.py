"""The shape of jobs/: modules by concern, each small enough to read in one sitting."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
LEAVING = {"bench.py"}  # moving to bench/; until then it may be long and use jobs/common.py
MAX_LINES = 400


def test_no_module_in_jobs_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in JOBS.rglob("*.py")
        if path.name not in LEAVING and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern: {long}"


def test_only_the_leaving_benchmark_imports_jobs_common():
    users = [
        str(path.relative_to(ROOT))
        for folder in ("jobs", "tests", "hack", "workflows")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".sh", ".yaml")
        and path.name not in LEAVING | {"common.py", "test_bench.py", "test_layout.py"}
        and re.search(r"jobs\.common\b|from jobs import .*\bcommon\b", path.read_text())
    ]
    assert not users, f"import from jobs.cli, jobs.cpus or jobs.files instead: {users}"


def test_the_readme_tree_lists_every_module_of_jobs():
    readme = (ROOT / "README.md").read_text()
    tree = readme[readme.index("## Repository") : readme.index("## Tests and what was verified how")]
    listed = set(re.findall(r"^  ([\w/]+(?:\.py|/)) ", tree, re.M))
    present = {p.name for p in JOBS.glob("*.py") if p.name != "__init__.py"}
    present |= {f"{p.name}/" for p in JOBS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert listed == present, f"README.md's tree: missing {present - listed}, gone {listed - present}"
