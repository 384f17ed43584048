"""The Grafana dashboards, built with Grafana's foundation SDK (`make generate` writes them to
kustomize/components/monitoring/dashboards/, where the cluster's Grafana and `make monitor`'s
read them).

  fmnist-serving   the model service: SLOs, traffic and errors, latency, versions, canary
                   against stable, what the model predicts (local servers), batching, limits;
                   local servers and TF Serving alike
  fmnist-pipeline  the training pipeline on Kubernetes: runs, durations, restarts, controllers

Each dashboard is a list of rows, each row a function returning its panels: a new concern is a
new row function in the list (its series in monitoring/series.py, its rules in monitoring/rules/
with a unit test; tests/observability checks that every panel's query parses and reads only
series that exist).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode, VariableRefresh

from monitoring import series, slo

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SERVING = '{model_name=~"$model", track=~"$track"}'  # the selector of the serving panels
PREDICT = 'API=~"predict|Predict", model_name=~"$model", track=~"$track"'
ERRORS = f'status=~"{slo.SERVER_ERRORS}"'
COUNT = series.REQUEST_COUNT.name
LATENCY = series.REQUEST_LATENCY.name

Panel = board.Panel  # the common base of every panel builder
Row = tuple[str, list[Panel]]


def query(expr: str, legend: str = "") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DATASOURCE)


def graph(title: str, description: str, unit: str, *queries: Dataquery, width: int = 8, stacked: bool = False):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(8)
        .datasource(DATASOURCE)
        .legend(common_builder.VizLegendOptions().show_legend(True).placement(common.LegendPlacement.BOTTOM))
        .line_width(1)
        .fill_opacity(10)
    )
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(30)
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def single(title: str, description: str, unit: str, q: Dataquery, red_below: float | None = None, width: int = 6):
    """A stat panel; green, or red below `red_below`."""
    steps = [Threshold(value=None, color="green")]
    if red_below is not None:
        steps = [Threshold(value=None, color="red"), Threshold(value=red_below, color="green")]
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(5)
        .datasource(DATASOURCE)
        .thresholds(board.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(q.ref_id("A"))
    )


def quantiles(metric: str, selector: str, by: str, scale: str = "") -> list[Dataquery]:
    """p50, p95 and p99 of a histogram, by `by` (plus le)."""
    return [
        query(
            f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval]))){scale}",
            f"p{round(q * 100)}{' {{' + by + '}}' if by else ''}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


# --- serving ------------------------------------------------------------------------------


def slo_row() -> Row:
    panels: list[Panel] = []
    for s in slo.SLOS:
        panels.append(
            single(
                f"{s.name.capitalize()}, last 3 days",
                f"{s.statement} The share of good events over the last 3 days.",
                "percentunit",
                query(f'1 - {s.ratio("3d")}{{model_name=~"$model"}}', "{{model_name}}"),
                red_below=s.objective,
            )
        )
    for s in slo.SLOS:
        panels.append(
            graph(
                f"{s.name.capitalize()} budget burn rate",
                f"How many times faster than the 30-day budget ({s.budget:g}) is spent: 14.4 over 1 h, or 6 over "
                "6 h, pages (docs/monitoring.md).",
                "x",
                *[
                    query(f'{s.ratio(w)}{{model_name=~"$model"}} / {s.budget:g}', f"{w} {{{{model_name}}}}")
                    for w in ("5m", "1h", "6h", "1d")
                ],
                width=6,
            )
        )
    return "Service level objectives", panels


def alerts_row() -> Row:
    firing = query('sum by (alertname, severity) (ALERTS{alertname=~"Fmnist.*", alertstate="firing"})', "{{alertname}}")
    pending = query(
        'sum by (alertname, severity) (ALERTS{alertname=~"Fmnist.*", alertstate="pending"})', "{{alertname}}"
    )
    return "Alerts", [
        graph("Firing alerts", "The project's alerts that fire (monitoring/rules/).", "short", firing, width=12),
        graph("Pending alerts", "Alerts whose condition holds, waiting out their `for`.", "short", pending, width=12),
    ]


def traffic_row() -> Row:
    return "Traffic and errors", [
        graph(
            "Calls by status",
            "Every REST and gRPC call of the model, probes included, by its status code's name.",
            "reqps",
            query(f"sum by (status) (rate({COUNT}{SERVING}[$__rate_interval]))", "{{status}}"),
            width=12,
            stacked=True,
        ),
        graph(
            "Server-side errors per call",
            f"Calls answered {slo.SERVER_ERRORS.replace('|', ', ')}, over all calls: the availability SLO's ratio.",
            "percentunit",
            query(
                f'sum by (model_name) (rate({COUNT}{{{ERRORS}, model_name=~"$model", track=~"$track"}}'
                f"[$__rate_interval])) / sum by (model_name) (rate({COUNT}{SERVING}[$__rate_interval]))",
                "{{model_name}}",
            ),
            width=12,
        ),
    ]


def latency_row() -> Row:
    within = (
        f'sum by (model_name) (rate({LATENCY}_bucket{{{PREDICT}, le=~"{series.LATENCY_THRESHOLD_US}(\\\\.0)?"}}'
        f"[$__rate_interval])) / sum by (model_name) (rate({LATENCY}_count{{{PREDICT}}}[$__rate_interval]))"
    )
    return "Latency of successful predict calls", [
        graph(
            "Predict latency",
            "Wall time of successful predict calls (TF Serving records none for failed ones).",
            "ms",
            *quantiles(LATENCY, PREDICT, "", " / 1000"),
            width=12,
        ),
        graph(
            "Predict calls within 121 ms",
            "The latency SLO's ratio: successful predict calls within TF Serving's 121,440 µs bucket.",
            "percentunit",
            query(within, "{{model_name}}"),
            width=12,
        ),
    ]


def versions_row() -> Row:
    load = series.LOAD_ATTEMPTS.name
    return "Versions", [
        graph(
            "Servers by the version they serve",
            "Each server's most recently loaded version (recorded by monitoring/rules/serving.yaml from "
            "TF Serving's load counter). During a canary two versions show.",
            "short",
            query(
                'count by (version, track) (instance:tfserving_served_version:first_seen{track=~"$track"})',
                "v{{version}} {{track}}",
            ),
            stacked=True,
        ),
        graph(
            "Version loads",
            "SavedModel loads by version folder and outcome (a version's first load creates its series).",
            "short",
            query(
                f'sum by (model_path, status) (increase({load}{{track=~"$track"}}[$__rate_interval]))',
                "{{status}} {{model_path}}",
            ),
        ),
    ]


def canary_row() -> Row:
    return "Canary against stable", [
        graph(
            "Calls by track",
            "Calls per second to each track: the canary's share of the traffic.",
            "reqps",
            query(f"sum by (track) (rate({COUNT}{SERVING}[$__rate_interval]))", "{{track}}"),
        ),
        graph(
            "Server-side errors per call, by track",
            "The availability SLO's ratio for each track: the canary step compares these.",
            "percentunit",
            query(
                f'sum by (track) (rate({COUNT}{{{ERRORS}, model_name=~"$model", track=~"$track"}}[$__rate_interval]))'
                f" / sum by (track) (rate({COUNT}{SERVING}[$__rate_interval]))",
                "{{track}}",
            ),
        ),
        graph(
            "p95 predict latency by track",
            "The canary step's p95 comparison, as Prometheus computes it.",
            "ms",
            query(
                f"histogram_quantile(0.95, sum by (le, track) (rate({LATENCY}_bucket{{{PREDICT}}}"
                "[$__rate_interval]))) / 1000",
                "{{track}}",
            ),
        ),
    ]


def batching_row() -> Row:
    return "Batching", [
        graph(
            "Instances per signature call (local servers)",
            "How many images each model call ran: requests merged by the local server's batching.",
            "short",
            *quantiles(series.LOCAL_BATCH_SIZE.name, 'track=~"$track"', ""),
        ),
        graph(
            "Batch size (TF Serving, --enable_batching)",
            "TF Serving's batching session: the size each batch was processed at.",
            "short",
            *quantiles(series.BATCH_SIZE.name, 'track=~"$track"', ""),
        ),
        graph(
            "Time in the batching queue (TF Serving)",
            "How long a request waited for its batch in TF Serving's batching session.",
            "ms",
            *quantiles(series.BATCH_QUEUING.name, 'track=~"$track"', "", " / 1000"),
        ),
    ]


def limits_row() -> Row:
    own = 'track=~"$track"'
    return "Limits and queue (local servers)", [
        graph(
            "Predict requests dropped, by limit",
            "Requests dropped before an answer: the client left, over --request-timeout, or over a limit "
            "(queue_full, body_bytes, connections; docs/serving.md).",
            "reqps",
            query(f"sum by (reason) (rate({series.LOCAL_DROPPED.name}{{{own}}}[$__rate_interval]))", "{{reason}}"),
            width=6,
            stacked=True,
        ),
        graph(
            "Pixels queued or running",
            "Decoded pixels of predict work the server holds; its queue limit is in the same unit.",
            "short",
            query(f"sum by (track) ({series.LOCAL_QUEUED.name}{{{own}}})", "{{track}}"),
            width=6,
        ),
        graph(
            "Open connections",
            "HTTP connections open to each server.",
            "short",
            query(f"sum by (track) ({series.LOCAL_CONNECTIONS.name}{{{own}}})", "{{track}}"),
            width=6,
        ),
        graph(
            "Images predicted",
            "Images (instances) the local servers classified per second: the batch sizes' sum.",
            "short",
            query(f"sum by (track) (rate({series.LOCAL_BATCH_SIZE.name}_sum{{{own}}}[$__rate_interval]))", "{{track}}"),
            width=6,
        ),
    ]


def predictions_row() -> Row:
    model = 'model_name=~"$model", track=~"$track"'
    classes = f"{series.LOCAL_PREDICTIONS.name}{{{model}}}"
    confidence = f"{series.LOCAL_CONFIDENCE.name}_bucket{{{model}}}"
    return "What the model predicts (local servers)", [
        graph(
            "Share of predictions by class",
            "Each class's share of the instances predicted, all versions together: a model that "
            "starts to predict one class for everything shows here first.",
            "percentunit",
            query(
                f"sum by (class) (rate({classes}[$__rate_interval])) / ignoring (class) group_left "
                f"sum(rate({classes}[$__rate_interval]))",
                "{{class}}",
            ),
            stacked=True,
        ),
        graph(
            "Confidence by version",
            "The top class probability of each instance: its median and its 10th percentile, per "
            "version. A drop against the version's own past is drift in the inputs or a worse model.",
            "percentunit",
            query(
                f"histogram_quantile(0.5, sum by (le, version) (rate({confidence}[$__rate_interval])))",
                "p50 v{{version}}",
            ),
            query(
                f"histogram_quantile(0.1, sum by (le, version) (rate({confidence}[$__rate_interval])))",
                "p10 v{{version}}",
            ),
        ),
        graph(
            "Unsure predictions by version",
            "The share of instances whose top probability is at most 0.5.",
            "percentunit",
            query(
                f'sum by (version) (rate({confidence[:-1]}, le="0.5"}}[$__rate_interval])) '
                f"/ sum by (version) (rate({series.LOCAL_CONFIDENCE.name}_count{{{model}}}[$__rate_interval]))",
                "v{{version}}",
            ),
        ),
    ]


SERVING_ROWS: list[Callable[[], Row]] = [
    slo_row,
    alerts_row,
    traffic_row,
    latency_row,
    versions_row,
    canary_row,
    predictions_row,
    batching_row,
    limits_row,
]


# --- pipeline -----------------------------------------------------------------------------

NS = '{namespace=~"$namespace"}'
OPERATOR = '{framework="tensorflow", job_namespace=~"$namespace"}'


def runs_row() -> Row:
    phases = series.ARGO_WORKFLOW_PHASES.name
    return "Runs", [
        single(
            "Workflows running",
            "Workflows in phase Running now (Argo's controller).",
            "short",
            query(f'sum({series.ARGO_WORKFLOWS.name}{{phase="Running"}})'),
        ),
        graph(
            "Workflows finished per hour",
            "Workflows that entered Succeeded, Failed or Error in the hour before each point.",
            "short",
            query(
                f'sum by (phase) (increase({phases}{{namespace=~"$namespace", phase=~"Succeeded|Failed|Error"}}[1h]))',
                "{{phase}}",
            ),
            width=9,
        ),
        graph(
            "Workflows by phase",
            "Workflows the controller holds, by phase.",
            "short",
            query(f"sum by (phase) ({series.ARGO_WORKFLOWS.name})", "{{phase}}"),
            width=9,
            stacked=True,
        ),
    ]


def durations_row() -> Row:
    pipeline = series.PIPELINE_DURATION.name
    training = series.TRAINING_DURATION.name
    return "Durations", [
        graph(
            "Pipeline run duration (mean over a day)",
            "Whole runs of workflows/e2e.yaml, by how they ended (its workflow-level metric).",
            "s",
            query(
                f"sum by (status) (increase({pipeline}_sum[1d])) / sum by (status) (increase({pipeline}_count[1d]))",
                "{{status}}",
            ),
            width=12,
        ),
        graph(
            "Training duration per candidate (mean over a day)",
            "Each candidate's TFJob, from its creation to its end (the train template's metric).",
            "s",
            query(
                f'sum by (model) (increase({training}_sum{{status="Succeeded"}}[1d])) / '
                f'sum by (model) (increase({training}_count{{status="Succeeded"}}[1d]))',
                "{{model}}",
            ),
            width=12,
        ),
    ]


def restarts_row() -> Row:
    tfjobs = [
        query(f"sum(increase({s.name}{OPERATOR}[1h]))", s.name.split("_jobs_")[1].removesuffix("_total"))
        for s in (series.TFJOBS_CREATED, series.TFJOBS_SUCCESSFUL, series.TFJOBS_FAILED, series.TFJOBS_RESTARTED)
    ]
    return "TFJobs and restarts", [
        graph("TFJobs per hour", "The training operator's TFJob counters, per hour.", "short", *tfjobs),
        graph(
            "Workflow pods restarted",
            "Pods Argo recreated after an infrastructure failure (eviction, node shutdown), per hour.",
            "short",
            query(f"sum by (reason) (increase({series.ARGO_POD_RESTARTS.name}{NS}[1h]))", "{{reason}}"),
        ),
        graph(
            "Workflow pods by phase",
            "Pods of workflows by phase: Pending for long means the cluster is out of room.",
            "short",
            query(f"sum by (phase) ({series.ARGO_PODS.name})", "{{phase}}"),
            stacked=True,
        ),
    ]


def controllers_row() -> Row:
    return "Controllers", [
        graph(
            "Controllers up",
            "1 while Prometheus scrapes each controller.",
            "short",
            query('up{job=~"workflow-controller|training-operator"}', "{{job}}"),
        ),
        graph(
            "Argo's queues",
            "Items waiting in each of the workflow controller's queues.",
            "short",
            query(f"sum by (queue_name) ({series.ARGO_QUEUE_DEPTH.name})", "{{queue_name}}"),
        ),
        graph(
            "Argo controller errors per hour",
            "Errors of the workflow controller, by cause.",
            "short",
            query(f"sum by (cause) (increase({series.ARGO_ERRORS.name}[1h]))", "{{cause}}"),
        ),
    ]


PIPELINE_ROWS: list[Callable[[], Row]] = [runs_row, durations_row, restarts_row, controllers_row]


# --- assembly -----------------------------------------------------------------------------


def datasource_variable() -> board.DatasourceVariable:
    return board.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, query_text: str) -> board.QueryVariable:
    return (
        board.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query_text)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def assemble(uid: str, title: str, description: str, rows: list[Callable[[], Row]], variables) -> board.Dashboard:
    built = (
        board.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["fmnist", "generated"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
    )
    for variable in [datasource_variable(), *variables]:
        built = built.with_variable(variable)
    ids = iter(range(1, 1000))
    for row in rows:
        name, panels = row()
        built = built.with_row(board.Row(name).id(next(ids)))
        for panel in panels:
            built = built.with_panel(panel.id(next(ids)))
    return built


def serving() -> board.Dashboard:
    return assemble(
        "fmnist-serving",
        "fmnist / serving",
        "The model service: local servers (make serve, make local) and TF Serving alike. docs/monitoring.md.",
        SERVING_ROWS,
        [
            label_variable("model", "Model", f"label_values({COUNT}, model_name)"),
            label_variable("track", "Track", 'label_values(up{job="tf-serving"}, track)'),
        ],
    )


def pipeline() -> board.Dashboard:
    return assemble(
        "fmnist-pipeline",
        "fmnist / pipeline",
        "The training pipeline on Kubernetes: Argo's workflows and the training operator's TFJobs.",
        PIPELINE_ROWS,
        [label_variable("namespace", "Namespace", f"label_values({series.ARGO_WORKFLOW_PHASES.name}, namespace)")],
    )


ALL: dict[str, Callable[[], board.Dashboard]] = {"fmnist-serving": serving, "fmnist-pipeline": pipeline}


def to_json(built: board.Dashboard) -> dict:
    """The dashboard as Grafana's JSON model (the SDK's own encoding)."""
    return json.loads(JSONEncoder(sort_keys=True).encode(built.build()))
