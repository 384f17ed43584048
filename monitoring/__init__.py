"""Monitoring as code: what the alert rules and dashboards read, and the files made from it.

  series.py      every series read, named once, with the exporter that writes it
  slo.py         the SLOs and their burn-rate rules (rules/slo.yaml)
  dashboards.py  the Grafana dashboards, built with Grafana's foundation SDK
  generate.py    `make generate`: writes the derived files (rules/slo.yaml, the cluster
                 component's PrometheusRule and dashboards), or checks them

rules/*.yaml are the alerting and recording rules (Prometheus's format; `make monitor` loads
them as they are), tests/*.test.yaml their promtool unit tests.
"""
