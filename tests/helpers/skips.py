"""What the suite skips on a machine like this one, why, and the command that runs it: said in
the first lines of the test output (tests/conftest.py) and counted in the README (make generate
reads the counts that collection writes to $FMNIST_SKIP_COUNTS)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

COUNTS_ENV = "FMNIST_SKIP_COUNTS"
# The fixtures that render the kustomizations from the pinned upstream bases.
MANIFEST_FIXTURES = {"upstream", "mirror"}
RUN_MANIFEST_TESTS = "UPSTREAM_MIRROR=/path/to/upstream make test"
RENDERING = ("tests/cluster", "tests/observability")  # where those tests are


@functools.cache
def manifests_unavailable() -> str | None:
    """Why the manifests cannot be rendered here (None: they can)."""
    from tests.cluster import render

    try:
        render.source()
    except render.Unavailable as err:
        return str(err)
    return None


def needs_manifests(item: pytest.Item) -> bool:
    return bool(MANIFEST_FIXTURES & set(getattr(item, "fixturenames", ())))


def documented_but_not_run(item: pytest.Item) -> bool:
    """A documented command that the docs test cannot run here (a cluster, a download...)."""
    command = getattr(item, "callspec", None) and item.callspec.params.get("command")
    reason = getattr(command, "reason_not_run", None)
    return bool(reason and reason())


def count(items: Sequence[pytest.Item]) -> dict[str, int]:
    return {
        "tests": len(items),
        "manifests": sum(map(needs_manifests, items)),
        "documented": sum(map(documented_but_not_run, items)),
    }


def write_counts(items: Sequence[pytest.Item]) -> None:
    """For make generate: the counts of a collection, where $FMNIST_SKIP_COUNTS says."""
    target = os.environ.get(COUNTS_ENV)
    if target:
        Path(target).write_text(json.dumps(count(items)))


def header(config: pytest.Config) -> list[str]:
    """The first lines of the test output: what is skipped here, why, and how to run it."""
    lines = ["skipped here, each with its reason in the summary at the end:"]
    asked = [str(arg) for arg in config.args]
    renders = not asked or any(arg.rstrip("/") in ("tests", ".") or arg.startswith(RENDERING) for arg in asked)
    why = manifests_unavailable() if renders else None
    if why:
        lines.append(
            f"  the tests that render the Kubernetes manifests (tests/cluster/, the monitoring component): {why}"
        )
        lines.append(
            f"    to run them: {RUN_MANIFEST_TESTS} (the layout: tests/cluster/render.py), or with github.com reachable"
        )
    lines.append("  the documented commands that need a cluster, Docker, a download or the suite itself")
    lines.append("    (tests/repo/test_docs.py names each; no command runs them here)")
    if os.environ.get("SERVING_URL"):
        lines.append("  the serving tests that need a local server: SERVING_URL points them at another one")
    marks = config.getoption("markexpr", "") or ""
    if "not slow" in marks:
        lines.append("  the tests marked slow (deselected by -m 'not slow'; make test runs them)")
    return lines
