"""Fixtures for the monitoring tests: promtool, as the OS provides it (hack/prometheus.sh)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool on PATH; missing, the test fails with one line saying how to get it (make test
    installs it as root on Debian and Ubuntu: hack/prometheus.sh ensure)."""
    found = shutil.which("promtool")
    if not found:
        pytest.fail(
            "promtool not found: run hack/prometheus.sh ensure as root, or install your OS's prometheus "
            "package (apt-get install prometheus; brew install prometheus)",
            pytrace=False,
        )
    return found
