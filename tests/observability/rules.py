"""The rules files and their promtool unit tests, read for the monitoring tests."""

from __future__ import annotations

import functools
from pathlib import Path

import promql_parser
import yaml

from tests.helpers import ROOT

RULES = ROOT / "monitoring" / "rules"
UNIT_TESTS = ROOT / "monitoring" / "tests"
DOCS = ROOT / "docs" / "monitoring.md"


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yaml"))


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS.glob("*.test.yaml"))


@functools.cache
def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict]:
    return [rule for path in rule_files() for group in load(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def input_series_names() -> set[str]:
    """The metric names of every input series of the unit tests."""
    names = set()
    for path in unit_test_files():
        for test in load(path)["tests"]:
            for item in test.get("input_series", []):
                names.add(selectors(item["series"])[0][0])
    return names


def selectors(expr: str) -> list[tuple[str | None, dict[str, str]]]:
    """Every vector selector of a PromQL expression: its metric name and label matchers
    (ValueError if it does not parse)."""
    found: list[tuple[str | None, dict[str, str]]] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            found.append((node.name or matchers.get("__name__"), matchers))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found
