"""The series the rules and dashboards read, named once, with the exporter that writes each.

TF Serving 2.20 (`--monitoring_config_file` with `prometheus_config { enable: true }`) writes
every TensorFlow monitoring metric of its process: the metric's path with each character
outside [a-zA-Z0-9_] turned into `:` (util/prometheus_exporter.cc, GetPrometheusMetricName),
a histogram as `_bucket{le}`, `_sum` and `_count`. The local model server exports the same
names (docs/serving.md), and its own extra series beside them under their own names
(jobs/serving/metrics.py). Argo's controller writes `argo_workflows_<name>` with no unit or
`_total` suffix added (util/telemetry/exporter_prometheus.go: UnderscoreEscapingWithoutSuffixes),
custom metrics of a workflow included; the training operator writes controller-runtime's
registry (pkg/common/metrics.go).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    source: str  # who exports it, and where upstream defines it

    def names(self) -> tuple[str, ...]:
        """The names it appears under on a metrics page."""
        if self.kind == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.name,)


TF_SERVING = "TF Serving 2.20.0"
TENSORFLOW = "TensorFlow 2.20 (in TF Serving 2.20.0)"
LOCAL = "the local server (jobs/serving/metrics.py)"
ARGO = "Argo Workflows v4.1.2 controller"
OPERATOR = "Kubeflow training operator v1.9.4"

# TF Serving's own, as the local server exports them too.
REQUEST_COUNT = Series(
    ":tensorflow:serving:request_count",
    "counter",
    ("model_name", "status"),
    f"{TF_SERVING}: servables/tensorflow/util.cc, every REST (model_servers/http_server.cc) and gRPC call",
)
REQUEST_LATENCY = Series(
    ":tensorflow:serving:request_latency",
    "histogram",
    ("model_name", "API", "entrypoint"),
    f"{TF_SERVING}: servables/tensorflow/util.cc, microseconds, successful calls only",
)
LOAD_ATTEMPTS = Series(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "counter",
    ("model_path", "status"),
    f"{TENSORFLOW}: tensorflow/cc/saved_model/loader.cc, status success or fail",
)
BATCH_SIZE = Series(
    ":tensorflow:serving:batching_session:processed_batch_size",
    "histogram",
    (),
    f"{TF_SERVING}: batching/batching_util.h, with --enable_batching",
)
BATCH_QUEUING = Series(
    ":tensorflow:serving:batching_session:queuing_latency",
    "histogram",
    ("thread_pool_name",),
    f"{TF_SERVING}: batching/batching_session.cc, microseconds, with --enable_batching",
)

# The local server's own (jobs/serving/metrics.py): queue, batching, limits.
LOCAL_BATCH_SIZE = Series("serving_batch_size", "histogram", (), f"{LOCAL}: instances per signature call")
LOCAL_QUEUED = Series("serving_queued_pixels", "gauge", (), f"{LOCAL}: decoded pixels queued or running")
LOCAL_CONNECTIONS = Series("serving_open_connections", "gauge", (), f"{LOCAL}: open HTTP connections")
LOCAL_DROPPED = Series(
    "serving_dropped_requests_total", "counter", ("reason",), f"{LOCAL}: predict requests dropped, by limit"
)

# What the model predicts, from the local server only (jobs/serving/signals.py): TF Serving has
# no such series.
LOCAL_PREDICTIONS = Series(
    "serving_predictions_total",
    "counter",
    ("model_name", "version", "class"),
    f"{LOCAL}: instances predicted, by version and top class (signals.py's rule for the outputs)",
)
LOCAL_CONFIDENCE = Series(
    "serving_prediction_confidence",
    "histogram",
    ("model_name", "version"),
    f"{LOCAL}: the top class probability of each instance, buckets 0.1 to 1",
)

# Argo Workflows (docs/metrics.md; util/telemetry/metrics_list.go).
ARGO_WORKFLOWS = Series("argo_workflows_gauge", "gauge", ("phase",), f"{ARGO}: workflows by phase, now")
ARGO_WORKFLOW_PHASES = Series(
    "argo_workflows_total_count", "counter", ("phase", "namespace"), f"{ARGO}: workflows entering each phase"
)
ARGO_PODS = Series("argo_workflows_pods_gauge", "gauge", ("phase",), f"{ARGO}: workflow pods by phase, now")
ARGO_POD_RESTARTS = Series(
    "argo_workflows_pod_restarts_total",
    "counter",
    ("reason", "condition", "namespace"),
    f"{ARGO}: pods restarted after an infrastructure failure",
)
ARGO_ERRORS = Series("argo_workflows_error_count", "counter", ("cause",), f"{ARGO}: the controller's errors")
ARGO_QUEUE_DEPTH = Series(
    "argo_workflows_queue_depth_gauge", "gauge", ("queue_name",), f"{ARGO}: items waiting in each queue"
)
# Custom metrics of workflows/e2e.yaml (its `metrics:` blocks), written by the same controller.
PIPELINE_DURATION = Series(
    "argo_workflows_fmnist_pipeline_duration_seconds",
    "histogram",
    ("status",),
    f"{ARGO}: workflows/e2e.yaml's workflow-level metric, one observation per finished run",
)
TRAINING_DURATION = Series(
    "argo_workflows_fmnist_training_duration_seconds",
    "histogram",
    ("model", "status"),
    f"{ARGO}: workflows/e2e.yaml's train template, one observation per candidate's TFJob",
)

# The training operator (pkg/common/metrics.go), label framework="tensorflow" for TFJobs.
TFJOBS_CREATED = Series(
    "training_operator_jobs_created_total", "counter", ("job_namespace", "framework"), f"{OPERATOR}"
)
TFJOBS_SUCCESSFUL = Series(
    "training_operator_jobs_successful_total", "counter", ("job_namespace", "framework"), f"{OPERATOR}"
)
TFJOBS_FAILED = Series(
    "training_operator_jobs_failed_total",
    "counter",
    ("job_namespace", "framework"),
    f"{OPERATOR}: only when a replica fails; a job ended by backoffLimit or activeDeadlineSeconds is not counted",
)
TFJOBS_RESTARTED = Series(
    "training_operator_jobs_restarted_total", "counter", ("job_namespace", "framework"), f"{OPERATOR}"
)

# Prometheus's own, for every target.
UP = Series("up", "gauge", ("job", "instance"), "Prometheus: 1 when the target's last scrape succeeded")

ALL: tuple[Series, ...] = tuple(value for value in list(globals().values()) if isinstance(value, Series))


def exported_names() -> set[str]:
    """Every name an exporter above writes."""
    return {name for series in ALL for name in series.names()}


# TF Serving's latency buckets: Buckets::Exponential(10, 1.8, 33) in microseconds
# (servables/tensorflow/util.cc), written with absl's six significant digits.
def tf_latency_bounds() -> list[str]:
    bounds, bound = [], 10.0
    for _ in range(33):
        bounds.append(f"{bound:.6g}")
        bound *= 1.8
    return bounds


# The latency SLO's threshold: a bucket bound, so that the good calls are one bucket's count.
LATENCY_THRESHOLD_US = "121440"
