"""The shape of jobs/: modules by concern, each small enough to read in one sitting."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
MAX_LINES = 400


def test_no_module_in_jobs_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in JOBS.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern: {long}"


def test_the_benchmark_is_not_in_the_image_package():
    """bench/ measures the jobs; jobs/ is what the image runs, and never imports bench."""
    assert not (JOBS / "bench.py").exists() and not (JOBS / "common.py").exists()
    users = [
        str(p.relative_to(ROOT))
        for p in JOBS.rglob("*.py")
        if re.search(r"^\s*(from|import) bench\b", p.read_text(), re.M)
    ]
    assert not users, users


def test_the_long_files_that_start_first_exist():
    from conftest import LONG_FILES

    missing = [name for name in LONG_FILES if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"conftest.LONG_FILES names test files that do not exist: {missing}"
