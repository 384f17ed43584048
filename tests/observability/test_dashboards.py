"""The Grafana dashboards (monitoring/dashboards.py, written to kustomize/components/monitoring/
dashboards/ by `make generate`): each one survives a round trip through Grafana's foundation
SDK, and every panel's query parses as PromQL and reads only series that exist, in an exporter's
names (monitoring/series.py: TF Serving's, the local server's own, Argo's, the training
operator's) or in the rules (their recording rules, their unit tests' input series), with labels
those series have."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from monitoring import dashboards, generate, series
from tests.observability.rules import input_series_names, recorded, selectors

FILES = sorted(generate.DASHBOARDS.glob("*.json"))
# What Grafana puts in for its own variables, and a value for the dashboards' variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}
TARGET_LABELS = {"job", "instance", "track", "run", "namespace", "pod", "container", "endpoint", "service"}
PROMETHEUS_OWN = {"ALERTS": {"alertname", "alertstate", "severity"}}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def queries(board: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def substituted(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # a dashboard variable: any value


def known_labels() -> dict[str, set[str]]:
    """Each series name the exporters write, with the labels it may carry."""
    out: dict[str, set[str]] = {}
    for s in series.ALL:
        for name in s.names():
            out[name] = set(s.labels) | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
    for name, labels in PROMETHEUS_OWN.items():
        out[name] = labels | TARGET_LABELS
    return out


def problems(expr: str) -> list[str]:
    """What is wrong with one panel query: it does not parse, or a selector names a series or a
    label that nothing writes."""
    try:
        found = selectors(substituted(expr))
    except ValueError as err:
        return [f"does not parse: {err}"]
    labels, rules, inputs = known_labels(), recorded(), input_series_names()
    out = []
    for name, matchers in found:
        if name in labels:
            unknown = set(matchers) - labels[name] - {"__name__"}
            if unknown:
                out.append(f"{name} has no label {sorted(unknown)}")
        elif name not in rules and name not in inputs:
            out.append(f"no exporter, recording rule or unit test writes {name}")
    return out


def test_the_dashboards_are_the_generated_ones():
    assert [p.name for p in FILES] == sorted(f"{name}.json" for name in dashboards.ALL)
    for path in FILES:
        assert load(path) == dashboards.to_json(dashboards.ALL[path.stem]()), f"{path.name}: run make generate"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_round_trip_through_the_sdk(path):
    """Read back into the SDK's model and written out again, the JSON is the same: nothing in it
    is unknown to the SDK or lost by it."""
    register_default_plugins()
    data = load(path)
    model = Dashboard.from_json(data)
    assert json.loads(JSONEncoder(sort_keys=True).encode(model)) == data


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_query_parses_and_reads_series_that_exist(path):
    board = load(path)
    found = queries(board)
    assert len(found) >= 10, path.name
    bad = [f"{title}: {expr}: {p}" for title, expr in found for p in problems(expr)]
    assert not bad, "\n".join(bad)


def test_the_query_check_catches_what_it_should():
    assert problems('sum(rate(:tensorflow:serving:request_count{model_name="x"}[$__rate_interval]))') == []
    assert problems("sum(rate(:tensorflow:serving:request_counts[5m]))") == [
        "no exporter, recording rule or unit test writes :tensorflow:serving:request_counts"
    ]
    assert problems('rate(:tensorflow:serving:request_count{model="x"}[5m])') == [
        ":tensorflow:serving:request_count has no label ['model']"
    ]
    assert problems("rate(:tensorflow:serving:request_count[5m]")[0].startswith("does not parse")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_panels_have_unique_ids_titles_and_the_datasource_variable(path):
    board = load(path)
    assert board["uid"] == path.stem and board["title"].startswith("fmnist / ")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        assert panel["title"] and panel.get("description"), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(refs), panel["title"]
    for right, below in zip(board["panels"], board["panels"][1:], strict=False):
        assert (below["gridPos"]["y"], below["gridPos"]["x"]) > (right["gridPos"]["y"], right["gridPos"]["x"])
        assert below["gridPos"]["x"] + below["gridPos"]["w"] <= 24


def test_the_serving_dashboard_covers_what_the_service_needs():
    titles = {p["title"] for p in panels(load(generate.DASHBOARDS / "fmnist-serving.json"))}
    rows = {p["title"] for p in load(generate.DASHBOARDS / "fmnist-serving.json")["panels"] if p["type"] == "row"}
    assert {"Calls by status", "Predict latency", "Servers by the version they serve", "Calls by track"} <= titles
    assert {"Batching", "Limits and queue (local servers)", "Canary against stable"} <= rows
