"""Promote the best candidate to the next served version, if it is better beyond noise.

The best candidate is the one with the highest validation accuracy (jobs.selection). It and
the served version classify the same test split; it is promoted only if McNemar's exact test
on the images where they disagree says it is better at `--significance` and its gain is at
least `--min-gain`, or if nothing is served, or with --force. It becomes
`<work>/models/fmnist/<N>/`, TF Serving's layout: copied into a hidden temp dir and renamed,
under a lock, so a server polling the folder never sees a partial version and two promotions
never take the same number. The model servers' config file then names the model
(`jobs.serving_config`: TF Serving starts before any model exists and loads the model once that
file lists it).

Then MLflow: a new version of the registered model `fmnist`, created from the candidate's
LoggedModel, with the alias `champion`; the version and the served folder name each other
(the version's tag `serving_version`, the folder's promotion.json `registered_version`). The
parent run records the decision and its figures, and report.md with the plots; the chosen
candidate's run records the comparison. `<work>/runs/<run>/promotion.json` has it all too, and the served history
(`jobs.history`) a line.

With `--rollout canary` and a version already served, the new version goes to the canary
servers only: the stable servers' config pins the version they serve, the canary servers'
config (`serving-canary.config`) pins the new one, `<work>/models/canary.json` says which is
which, and the registry version gets the alias `canary` (`champion` stays on the stable
one) until `jobs.canary` promotes or rolls it back. "What is served" is then the stable
servers' pinned version, not the highest on disk. The stable servers are pinned before the
new version is published (`jobs.core.serving_config.hold`: TF Serving polls its config and its
model folder on separate timers).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jobs.core import serving_config
from jobs.core.cli import JobError, add_run_arguments, emit, fraction, parser
from jobs.core.files import locked, read_json, write_json
from jobs.core.paths import MODEL_NAME, Work, version_record
from jobs.evaluate import report
from jobs.evaluate.evaluate import Evaluation, correct, predict
from jobs.ingest import data
from jobs.release import history
from jobs.release.registry import settle
from jobs.release.selection import DEFAULT_MIN_GAIN, DEFAULT_SIGNIFICANCE, Gate, best_candidate, decide, mcnemar
from jobs.release.state import CANARY, CHAMPION, publish, refuse_during_canary, registered, write_canary
from jobs.tracking.tracker import Tracker
from jobs.train import models, run_info

log = logging.getLogger("jobs.promote")

# direct: every server serves a promoted version at once; canary: the canary servers first.
ROLLOUTS = ("direct", "canary")


@dataclasses.dataclass
class Promotion:
    """What promotion decided, and what it did: promotion.json (`record`), the parent run's
    report, the step's results."""

    run_id: str
    dataset: str
    model: str  # the candidate chosen on validation
    validation_accuracy: float
    accuracy: float  # its test accuracy
    scores: dict[str, float]  # every candidate's validation accuracy
    test_scores: dict[str, float]
    served_version: int | None  # what was served before
    served_accuracy: float | None  # its test accuracy on the same images
    gate: dict[str, float]
    mcnemar: dict | None  # the paired test's figures (mcnemar_record), None with nothing served
    promoted: bool
    decision: str  # promoted, forced or kept
    reason: str
    version: int | None  # what is served now
    registered_version: str | None
    mlflow_run_id: str | None
    model_id: str | None
    rollout: str
    canary: dict | None  # the canary started (jobs.release.state), if any
    mlflow_parent_run_id: str | None = None

    def record(self) -> dict:
        return dataclasses.asdict(self)


def chosen_correct(evaluation: Evaluation, test, digest: str) -> np.ndarray:
    """Which test images the chosen candidate classifies right, as evaluate recorded it; its
    record must be of this test split."""
    if evaluation.test_digest not in (None, digest) or len(evaluation.correct) != len(test.labels):
        raise JobError(f"candidate {evaluation.name} was evaluated on another test split: re-run evaluate")
    return evaluation.correct


def served_correct(model_dir: Path, test) -> np.ndarray | None:
    """The served version scored on this test split; None if it cannot be loaded."""
    try:
        return correct(predict(model_dir, test.images), test.labels)
    except JobError as err:
        log.warning("the served version cannot be scored (%s); treating it as absent", err)
        return None


def logged_model(work: Work, tracker, result: Promotion, example) -> str | None:
    """The chosen candidate's LoggedModel: the one its training logged, or, when training lost
    the tracking server before logging it, one logged now into the candidate's run, so that the
    registry version is still a model MLflow can load."""
    if result.model_id or not result.mlflow_run_id:
        return result.model_id
    candidate = work.candidate(result.run_id, result.model)
    info = read_json(candidate.run_info) if candidate.run_info.exists() else {}
    log.info("%s has no logged model in MLflow (tracking was away when it finished): logging it now", result.model)
    model_id = tracker.log_model(
        result.mlflow_run_id,
        candidate.model,
        name=result.model,
        step=max(0, info.get("epochs_trained", 1) - 1),
        example=example,
        params=info.get("params", {}),
        tags={"pipeline_run": result.run_id, "model": result.model, "dataset": result.dataset},
    )
    if model_id:
        write_json(candidate.run_info, {**read_json(candidate.run_info), "model_id": model_id})
    return model_id


def register(work: Work, tracker, result: Promotion, example, alias: str = CHAMPION) -> str | None:
    """The promoted candidate as a new version of the registered model, from its LoggedModel,
    tagged with the served folder; the folder's promotion.json then names the version.
    `example`: a few test images, the input example of a LoggedModel logged here."""
    result.model_id = logged_model(work, tracker, result, example)
    version = result.version
    folder = work.served() / str(version)
    tags = {
        "serving_version": str(version),
        "serving_path": str(folder.resolve()),
        "pipeline_run": result.run_id,
        "model": result.model,
        "validation_accuracy": f"{result.validation_accuracy:.4f}",
        "test_accuracy": f"{result.accuracy:.4f}",
        "decision": result.decision,
    }
    if result.mcnemar:
        tags["mcnemar_p_value"] = f"{result.mcnemar['p_value']:.4g}"
    registered = tracker.register(
        MODEL_NAME,
        result.model_id,
        result.mlflow_run_id,
        folder.resolve().as_uri(),
        alias,
        tags,
        description="Fashion-MNIST classifier. The version with the alias champion is the one served.",
    )
    if registered is not None:
        record = read_json(version_record(folder))
        write_json(
            version_record(folder),
            {
                **record,
                "registered_model": MODEL_NAME,
                "registered_version": registered,
                "model_id": result.model_id,
            },
        )
    return registered


def track(work: Work, tracker, result: Promotion, gate: Gate, force: bool, example) -> None:
    """The decision in the parent run (params, metrics, tags, a description) and in the
    chosen candidate's run; the registry version if promoted (`example`: see register)."""
    parent, child = result.mlflow_parent_run_id, result.mlflow_run_id
    comparison = result.mcnemar or {}
    figures = {
        "chosen_validation_accuracy": result.validation_accuracy,
        "chosen_test_accuracy": result.accuracy,
        "promoted": int(result.promoted),
    }
    if result.served_accuracy is not None:
        figures["served_test_accuracy"] = result.served_accuracy
    if comparison:
        figures.update(
            mcnemar_statistic=comparison["statistic"],
            mcnemar_p_value=comparison["p_value"],
            mcnemar_candidate_only=comparison["candidate_only"],
            mcnemar_served_only=comparison["served_only"],
            test_accuracy_gain=comparison["gain"],
        )
    if result.version is not None:
        figures["served_version"] = result.version
    tags = {
        "decision": result.decision,
        "decision_reason": result.reason,
        "chosen_candidate": result.model,
        "served_version": str(result.version),
        # Tags, not params: a repeated promotion of the same pipeline run may use other settings.
        "gate_significance": f"{gate.significance:g}",
        "gate_min_gain": f"{gate.min_gain:g}",
        "forced": str(force).lower(),
    }
    tracker.log_metrics(parent, figures)
    tracker.log_metrics(child, {k: v for k, v in figures.items() if k != "promoted"})
    tracker.set_tags(child, {"selected": "true", "decision": result.decision})
    if result.promoted:
        alias = CANARY if result.canary else CHAMPION
        result.registered_version = register(work, tracker, result, example, alias)
        tags["registered_version"] = str(result.registered_version)
        tracker.set_tags(
            child,
            {
                "promoted": "true",
                "serving_version": str(result.version),
                "registered_version": tags["registered_version"],
            },
        )
    tracker.set_tags(parent, tags)


def mcnemar_record(comparison) -> dict:
    """The test's figures as promotion.json keeps them."""
    fields = ("candidate_only", "served_only", "images", "both", "statistic", "p_value", "p_value_two_sided", "gain")
    return {field: getattr(comparison, field) for field in fields}


def write_outputs(work: Work, tracker, parent: str | None, result: Promotion, names: Sequence[str]) -> None:
    """promotion.json, the candidates' plot and report.md in the run's folder, and on the
    pipeline's MLflow run, which ends here."""

    run_id, dataset, best = result.run_id, result.dataset, result.model
    plots = work.plots(run_id)
    plots.mkdir(parents=True, exist_ok=True)
    title = f"{', '.join(names)} on {dataset}, run {run_id}: accuracy"
    candidates_png = plots / ".candidates.png"
    report.plot_comparison(
        {name: {"validation": result.scores[name], "test": result.test_scores[name]} for name in names},
        result.served_accuracy,
        best,
        title,
        candidates_png,
        served_version=result.served_version,
    )
    os.replace(candidates_png, plots / "candidates.png")
    write_json(work.promotion(run_id), result.record())
    report.write_report(work, result.record(), names)
    tracker.log_artifact(parent, work.report(run_id))
    tracker.log_artifact(parent, work.promotion(run_id))
    tracker.log_plots(parent, plots, "plots")
    tracker.set_tags(parent, {"mlflow.note.content": report.summary(result.record())})
    tracker.end_run(parent)


def serve(work: Work, current: int | None, version: int, rollout: str, run_id: str) -> dict | None:
    """Points the servers at a new version: all of them (`direct`, or nothing served yet), or
    only the canary servers (`canary`), returning the canary's record then."""
    if rollout != "canary" or current is None:
        serving_config.serve_latest(work)  # the canary servers, if any, follow too
        return None
    serving_config.pin(work, "canary", version)  # the stable ones were held before it was published
    state = {
        "model": MODEL_NAME,
        "stable_version": current,
        "canary_version": version,
        "run_id": run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "registered_version": None,
        "stable_registered_version": registered(work, current),
    }
    write_canary(work, state)
    log.info("version %d goes to the canary servers; the stable ones stay on version %d", version, current)
    return state


def choose(work: Work, run_id: str, dataset: str, names: Sequence[str]):
    """The candidates' evaluations, the one best on validation, the test split and which of its
    images the chosen one classifies right (evaluate's record)."""
    evaluations = {name: Evaluation.read(work.candidate(run_id, name), run_id) for name in names}
    best = best_candidate({name: e.validation_accuracy for name, e in evaluations.items()}, names)
    splits, records = data.model_splits(work.dataset(dataset), ("test",))
    test = splits["test"]
    return evaluations, best, test, chosen_correct(evaluations[best], test, records["test"]["digest"])


def publish_promotion(work: Work, result: Promotion, model: Path, outcome: str) -> None:
    """The chosen model as the next served version, the servers pointed at it (or the canary's),
    a line in the served history; call with the promotion lock held."""
    record = {
        "run_id": result.run_id,
        "model": result.model,
        "accuracy": result.accuracy,
        "dataset": result.dataset,
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mlflow_run_id": result.mlflow_run_id,
        "model_id": result.model_id,
        "decision": outcome,
        "actor": history.default_actor(),
    }
    current = result.version
    if result.rollout == "canary" and current is not None:
        serving_config.hold(work, "stable", current)
    result.version = publish(model, work.served(), record)
    result.canary = serve(work, current, result.version, result.rollout, result.run_id)
    history.write_published(work, f"version {result.version} ({result.model} of run {result.run_id})")
    log.info("promoted %s as version %d of %s", result.model, result.version, work.served())


def promote(
    work: Work,
    run_id: str,
    dataset: str,
    names: Sequence[str],
    force: bool,
    gate: Gate,
    rollout: str = "direct",
    tracker: Tracker | None = None,
) -> Promotion:

    refuse_during_canary(work, "promote")  # before the evaluations are read; again under the lock
    evaluations, best, test, chosen = choose(work, run_id, dataset, names)
    validation_scores = {name: e.validation_accuracy for name, e in evaluations.items()}
    candidate = work.candidate(run_id, best)
    base = work.served()
    with locked(base / ".promote.lock"):  # held across choose-number-copy-rename
        refuse_during_canary(work, "promote")
        current = serving_config.served_version(work)
        served = served_correct(base / str(current), test) if current is not None else None
        comparison = mcnemar(chosen, served) if served is not None else None
        decision = decide(comparison, gate, force)
        log.info(
            "chosen on validation: %s (%s); %s",
            best,
            ", ".join(f"{k} {v:.4f}" for k, v in validation_scores.items()),
            decision.reason,
        )
        info = run_info.read(candidate)
        result = Promotion(
            run_id=run_id,
            dataset=dataset,
            model=best,
            validation_accuracy=validation_scores[best],
            accuracy=float(chosen.mean()),
            scores=validation_scores,
            test_scores={name: e.accuracy for name, e in evaluations.items()},
            served_version=current,
            served_accuracy=float(served.mean()) if served is not None else None,
            gate={"significance": gate.significance, "min_gain": gate.min_gain},
            mcnemar=None,
            promoted=decision.promote,
            decision=decision.outcome,
            reason=f"{best} chosen on validation ({validation_scores[best]:.4f}); {decision.reason}",
            version=current,
            registered_version=None,
            mlflow_run_id=info.get("mlflow_run_id"),
            model_id=info.get("model_id"),
            rollout=rollout,
            canary=None,
        )
        if comparison is not None:
            result.mcnemar = mcnemar_record(comparison)
        if decision.promote:
            publish_promotion(work, result, candidate.model, decision.outcome)

    tracker = Tracker() if tracker is None else tracker
    parent = tracker.pipeline_run(work, run_id, {"dataset": dataset})
    result.mlflow_parent_run_id = parent
    track(work, tracker, result, gate, force, test.images[:5])
    if result.canary is not None and result.registered_version is not None:
        result.canary["registered_version"] = result.registered_version
        write_canary(work, result.canary)
    write_outputs(work, tracker, parent, result, names)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The step's flags: their defaults are the pipeline's (jobs.steps reads them)."""
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p, models.NAMES)
    p.add_argument("--force", action="store_true", help="promote the best even if it is not better beyond noise")
    p.add_argument(
        "--significance",
        type=fraction,
        default=DEFAULT_SIGNIFICANCE,
        help="promote only if McNemar's exact one-sided p-value is at most this (1: no test)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=DEFAULT_MIN_GAIN,
        help="and only if test accuracy rises by at least this much (0.002: 20 images in 10,000)",
    )
    p.add_argument(
        "--rollout",
        choices=ROLLOUTS,
        default="direct",
        help="direct: every server serves the new version; canary: the canary servers first (jobs.canary decides)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    gate = Gate(args.significance, args.min_gain)
    work, tracker = Work(args.work_dir), Tracker()
    result = promote(work, args.run_id, args.dataset, args.models, args.force, gate, args.rollout, tracker)
    comparison = result.mcnemar or {}
    emit(
        model=result.model,
        validation_accuracy=result.validation_accuracy,
        accuracy=result.accuracy,
        served_accuracy=result.served_accuracy if result.served_accuracy is not None else "none",
        p_value=comparison.get("p_value", "none"),
        promoted=int(result.promoted),
        version=result.version if result.version is not None else "none",
    )
    served = f"version {result.version} is served" if result.version is not None else "nothing is served"
    settle(work, tracker, f"{'promoted: ' if result.promoted else ''}{served}")
    return 0
