"""MLflow 3.17.2 sends usage telemetry unless MLFLOW_DISABLE_TELEMETRY is true
(`mlflow/environment_variables.py`, `mlflow/telemetry/utils.py`): every pod that runs MLflow
(the tracking server, every job of the workflows, the TFJob workers) sets it, and the local
runner sets it for every step it starts unless the user chose otherwise."""

from __future__ import annotations

import os

import pytest

from tests.cluster import render
from tests.cluster.test_policy import all_containers, pod_specs, workflow_pods

MLFLOW_IMAGES = ("fmnist-jobs", "ghcr.io/mlflow/mlflow")


def runs_mlflow(container: dict) -> bool:
    image = container["image"].split("@")[0].rsplit(":", 1)[0]
    return any(image.endswith(name) for name in MLFLOW_IMAGES) and container.get("command") != ["/bin/sh", "-c"]


@pytest.mark.parametrize("name", ["overlays/local+all", "overlays/cluster", "overlays/cluster+gpu"])
def test_every_pod_that_runs_mlflow_turns_telemetry_off(rendered, wf, rollback_wf, name):
    docs = rendered[name] + workflow_pods(wf) + workflow_pods(rollback_wf)
    seen = []
    for where, spec in pod_specs(docs):
        for c in all_containers(spec):
            if runs_mlflow(c):
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true", f"{where}/{c['name']}"
                seen.append(where)
    assert {"Deployment/mlflow", "Pod/e2e-ingest", "Pod/e2e-rollback"} <= set(seen), seen
    assert any(w.endswith("-worker-0") for w in seen), "the TFJob workers"


def test_the_local_runner_turns_it_off_by_default(tmp_path, monkeypatch):
    from jobs.local import settings as local_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = local_settings.build_parser().parse_args(["--work-dir", str(tmp_path / "work")])
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    local_settings.settings_from(args)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true", "inherited by every step it starts"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    local_settings.settings_from(args)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false", "the user's choice stands"
    assert (
        "MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}"
        in (render.ROOT / "hack" / "mlflow-ui.sh").read_text()
    )
