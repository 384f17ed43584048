"""The canary judged on what it predicts, against two real local servers on loopback (each
pinned by its own config file, as TF Serving is in the cluster) and a real MLflow store: a
canary that predicts one class for everything is fast and error-free, and is rolled back on its
answers, by each quality bound alone and by all of them in the step; a canary that is the
stable model is promoted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jobs.core.paths import Work
from jobs.release import canary
from jobs.release.canary_metrics import PROMOTE, ROLLBACK, Bounds
from jobs.release.quality import QualityBounds
from tests.helpers.jobs import assert_one_line_error, run_job
from tests.pipeline.test_canary_serving import served, serving_tracks, start_canary
from tests.serving.conftest import wait_until

pytestmark = pytest.mark.slow

OFF = {"min_agreement": 0.0, "max_class_psi": 1e9, "accuracy_significance": 0.0}  # every quality bound off
NAMED = {
    "min_agreement": "agreement with stable",
    "max_class_psi": "class shift PSI",
    "accuracy_significance": "McNemar",
}


def one_class_model(path: Path) -> Path:
    """A SavedModel with the served model's signature (image_bytes in; class_id, class_name,
    probabilities out) that answers class 0 with certainty for every image, without looking at
    it: fast and error-free."""
    import tensorflow as tf

    class OneClass(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            n = tf.shape(image_bytes)[0]
            return {
                "probabilities": tf.one_hot(tf.zeros([n], tf.int32), 10),
                "class_id": tf.zeros([n], tf.int64),
                "class_name": tf.fill([n], "T-shirt/top"),
            }

    module = OneClass()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_a_one_class_canary_is_rolled_back_on_its_answers_and_a_faithful_one_promoted(
    tmp_path, ingested, trained_model, mlflow_uri
):
    from mlflow.tracking import MlflowClient

    work = Work(ingested)
    base = work.served()
    base.mkdir(parents=True)
    shutil.copytree(trained_model, base / "1")
    one_class_model(base / "2")
    client = MlflowClient(mlflow_uri)
    client.create_registered_model("fmnist")
    registered = {v: client.create_model_version("fmnist", (base / str(v)).as_uri()).version for v in (1, 2)}
    client.set_registered_model_alias("fmnist", "champion", registered[1])
    start_canary(work, 1, 2, client, registered)

    with serving_tracks(base, work, tmp_path) as urls:
        state = {"stable_version": 1, "canary_version": 2}
        watching = canary.Watch(urls["stable"], urls["canary"], "fmnist", 2.0, 20.0, 60.0)
        probes = canary.probe_images(work, "synthetic", watching.requests)
        assert len(probes.images) == 40 and sorted(set(probes.labels.tolist())) == list(range(10))
        # Judged on errors and latency only (the latency bounds left wide: two processes on a
        # shared machine), the one-class canary passes: it answers every probe, and quickly.
        window = Bounds(min_requests=20, max_p50_ratio=10, max_p95_ratio=10)
        blind = canary.judge(watching, probes, state, window, QualityBounds(**OFF))
        assert blind.outcome == PROMOTE, blind.reason
        assert blind.figures["canary"]["errors"] == 0 and blind.figures["canary"]["requests"] >= 20
        assert blind.figures["quality"]["canary"]["classes"] == {0: blind.figures["quality"]["images"]}

        # Each quality bound alone, at its default, rolls it back, naming that bound only.
        for bound, needle in NAMED.items():
            answers = QualityBounds(**{**OFF, bound: getattr(QualityBounds(), bound)})
            decision = canary.judge(watching, probes, state, window, answers)
            assert decision.outcome == ROLLBACK and len(decision.reasons) == 1, decision.reason
            assert needle in decision.reason, decision.reason

        # The step itself, every bound at its default: rolled back, loudly, the stable model
        # served again as version 3, the bounds and figures in the canary's MLflow run.
        argv = [
            "--work-dir", work.root, "--run-id", "r1", "--dataset", "synthetic",
            "--stable-url", urls["stable"], "--canary-url", urls["canary"],
            "--seconds", "2", "--probe-rate", "20", "--min-requests", "20",
            "--max-p50-ratio", "10", "--max-p95-ratio", "10",
        ]  # fmt: skip
        proc = run_job("canary", *argv, MLFLOW_TRACKING_URI=mlflow_uri)
        error = assert_one_line_error(proc, "canary version 2 rolled back to 1", "agreement with stable")
        assert "class shift PSI" in error and "McNemar exact p" in error and "error rate" not in error
        assert "min_agreement=0.8" in proc.stdout and "max_class_psi=0.25" in proc.stdout
        assert "accuracy_significance=0.05" in proc.stdout and "agreement=" in proc.stdout
        record = json.loads((work.run("r1") / "canary.json").read_text())
        figures = record["figures"]
        assert record["action"] == "rollback" and figures["canary"]["errors"] == 0
        assert f"compared_images={figures['quality']['images']}" in proc.stdout
        assert figures["quality"]["canary"]["classes"] == {"0": figures["quality"]["images"]}
        assert figures["quality"]["canary"]["confidence_histogram"][-1] == figures["quality"]["images"]
        assert figures["quality"]["stable"]["accuracy"] > figures["quality"]["canary"]["accuracy"]
        [run] = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id], "tags.role = 'canary'")
        assert run.info.run_name == "canary-2" and run.data.tags["canary_decision"] == "rollback"
        params = run.data.params
        assert (params["min_agreement"], params["max_class_psi"], params["accuracy_significance"]) == (
            "0.8",
            "0.25",
            "0.05",
        )
        assert params["max_error_rate"] == "0.01" and params["seconds"] == "2.0"
        m = run.data.metrics
        assert m["quality_agreement"] < 0.8 and m["quality_class_psi"] > 0.25 and m["quality_accuracy_p_value"] <= 0.05
        assert m["quality_canary_predicted_class_0"] == m["quality_images"] and m["window_canary_errors"] == 0
        assert run.data.tags["mlflow.parentRunId"], "the canary's run is a child of the pipeline's"
        wait_until(lambda: served(urls["canary"]) == {"3"}, what="the canary server on version 3 (version 1's model)")

        # A canary that is the stable model: promoted, every bound kept.
        shutil.copytree(trained_model, base / "4")
        registered[4] = client.create_model_version("fmnist", (base / "4").as_uri()).version
        registered[3] = registered[1]
        start_canary(work, 3, 4, client, registered)
        wait_until(lambda: served(urls["canary"]) == {"4"}, what="the canary server on version 4")
        proc = run_job("canary", *argv, MLFLOW_TRACKING_URI=mlflow_uri)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "decision=promote" in proc.stdout and "agreement=1" in proc.stdout and "class_psi=0" in proc.stdout
        record = json.loads((work.run("r1") / "canary.json").read_text())
        assert "agreement with stable 100.0%" in record["reason"] and "McNemar exact p = 1" in record["reason"]
