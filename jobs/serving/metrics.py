"""The server's Prometheus metrics (at /monitoring/prometheus/metrics)."""

from __future__ import annotations

from collections.abc import Callable

from jobs.serving.servable import Servable


class Metrics:
    def __init__(self, model_name: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they only add noise here
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "HTTP requests answered", ["api", "code"], registry=self.registry)
        self.errors = Counter(
            "serving_request_errors",
            "HTTP requests answered with an error (4xx/5xx)",
            ["api", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "Time from request to response",
            ["api"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=self.registry,
        )
        self.instances = Counter("serving_predict_instances", "Instances (images) predicted", registry=self.registry)
        self.batch = Histogram(
            "serving_batch_size",
            "Instances per signature call (merged requests)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.version = Gauge(
            "serving_model_version", "Model version being served (0: none)", ["model"], registry=self.registry
        )
        self.loads = Counter(
            "serving_model_loads", "Version loads by outcome", ["model", "outcome"], registry=self.registry
        )
        self.dropped = Counter(
            "serving_dropped_requests",
            "Predict requests dropped before they were answered, by reason (gone: the client left; "
            "deadline: over --request-timeout; queue_full, body_bytes, connections: over a limit)",
            ["reason"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "serving_queued_pixels", "Decoded pixels of predict work queued or running", registry=self.registry
        )
        self.connections = Gauge("serving_open_connections", "Open HTTP connections", registry=self.registry)
        self.model_name = model_name
        self.version.labels(model_name).set(0)

    def watch(self, queued_pixels: Callable[[], float], connections: Callable[[], float]) -> None:
        self.queued.set_function(queued_pixels)
        self.connections.set_function(connections)

    def changed(self, servable: Servable | None) -> None:
        if servable is None:
            self.loads.labels(self.model_name, "failure").inc()
        else:
            self.loads.labels(self.model_name, "success").inc()
            self.version.labels(self.model_name).set(servable.version)

    def observe(self, api: str, code: int, seconds: float) -> None:
        self.requests.labels(api, str(code)).inc()
        if code >= 400:
            self.errors.labels(api, str(code)).inc()
        self.latency.labels(api).observe(seconds)

    def page(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
