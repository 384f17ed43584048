"""What a newcomer reads first in `make test`'s output: which tests are skipped on this machine,
why, and the command that runs them (tests/helpers/skips.py); the README's counts of them are
generated from the same test (make verify)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def first_lines(*args: str, **env: str) -> list[str]:
    """The first lines of a pytest run's output, the header included (no test runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k not in ("UPSTREAM_MIRROR", "SERVING_URL")}, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.splitlines()[:10]


def test_the_first_lines_say_what_is_skipped_why_and_how_to_run_it(tmp_path):
    """An upstream mirror that lacks the pinned bases (as a wrong UPSTREAM_MIRROR is): the
    manifest tests are named as skipped, with the reason and the command that runs them."""
    lines = first_lines("tests/cluster/test_render.py", UPSTREAM_MIRROR=str(tmp_path))
    text = "\n".join(lines)
    assert "skipped here, each with its reason in the summary at the end:" in text, text
    assert re.search(rf"the tests that render the Kubernetes manifests .*UPSTREAM_MIRROR={tmp_path} lacks", text), text
    assert "to run them: UPSTREAM_MIRROR=/path/to/upstream make test" in text, text
    assert "the documented commands that need a cluster" in text, text


def test_with_the_mirror_the_manifest_tests_are_not_announced_as_skipped():
    mirror = os.environ.get("UPSTREAM_MIRROR", "")
    if not mirror:
        pytest.skip("no UPSTREAM_MIRROR: the run with a mirror cannot be shown (UPSTREAM_MIRROR=... make test)")
    text = "\n".join(first_lines("tests/cluster/test_render.py", UPSTREAM_MIRROR=mirror))
    assert "skipped here" in text and "render the Kubernetes manifests" not in text, text


def test_slow_tests_deselected_are_said_so():
    lines = first_lines("tests/unit/test_splits.py", "-m", "not slow")
    assert any("the tests marked slow (deselected by -m 'not slow'; make test runs them)" in line for line in lines)
