"""What the canary predicts, judged against stable on the same images (jobs.release.quality):
agreement, the class distribution's PSI, accuracy by the promotion gate's McNemar test, each
bound alone, and how the verdict joins the decision on errors and latency.
tests/pipeline/test_canary_quality.py judges real servers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.core.cli import JobError
from jobs.release import quality, selection
from jobs.release.canary_metrics import INCONCLUSIVE, PROMOTE, ROLLBACK, Decision
from jobs.release.quality import Prediction, QualityBounds

LABELS = np.arange(200) % 10  # balanced, as the synthetic test split is
OFF = {"min_agreement": 0.0, "max_class_psi": 1e9, "accuracy_significance": 0.0}  # every bound off


def answers(classes, confidence: float | None = 0.9) -> dict[int, Prediction]:
    return {i: Prediction(int(k), confidence) for i, k in enumerate(classes)}


def mostly_right(wrong_every: int) -> np.ndarray:
    """The labels, with every `wrong_every`-th image from the fourth given the next class."""
    out = LABELS.copy()
    out[3::wrong_every] = (out[3::wrong_every] + 1) % 10
    return out


def test_a_canary_that_answers_as_stable_keeps_every_bound():
    stable = answers(mostly_right(10))
    verdict = quality.judge(stable, dict(stable), LABELS, QualityBounds())
    assert verdict.broken == () and len(verdict.within) == 3
    figures = verdict.figures
    assert figures["images"] == 200 and figures["agreement"] == 1.0 and figures["class_psi"] == 0.0
    assert figures["accuracy_p_value"] == 1.0 and figures["stable_only_right"] == figures["canary_only_right"] == 0
    assert figures["stable"]["accuracy"] == figures["canary"]["accuracy"] == 0.9


def test_a_canary_that_predicts_one_class_breaks_every_bound():
    verdict = quality.judge(answers(mostly_right(10)), answers([0] * 200), LABELS, QualityBounds())
    assert len(verdict.broken) == 3, verdict.broken
    agreement, shift, accuracy = verdict.broken
    assert agreement.startswith("agreement with stable 10.0% of 200 images, below the minimum 80.0%")
    assert "PSI" in shift and "above 0.25" in shift
    assert "McNemar exact p" in accuracy and "at or below 0.05" in accuracy
    assert verdict.figures["canary"]["classes"] == {0: 200}


@pytest.mark.parametrize("bound", ["min_agreement", "max_class_psi", "accuracy_significance"])
def test_each_bound_alone_rolls_the_one_class_canary_back(bound):
    on = {**OFF, bound: getattr(QualityBounds(), bound)}
    verdict = quality.judge(answers(mostly_right(10)), answers([0] * 200), LABELS, QualityBounds(**on))
    assert len(verdict.broken) == 1, verdict.broken
    assert {"min_agreement": "agreement", "max_class_psi": "PSI", "accuracy_significance": "McNemar"}[bound] in (
        verdict.broken[0]
    )
    verdict = quality.judge(answers(mostly_right(10)), answers([0] * 200), LABELS, QualityBounds(**OFF))
    assert verdict.broken == (), "with every bound off nothing is broken"


def test_the_psi_is_the_textbook_sum_over_smoothed_shares():
    stable, canary = {0: 60, 1: 40}, {0: 30, 1: 70}
    s = np.array([60.5, 40.5]) / 101
    c = np.array([30.5, 70.5]) / 101
    assert quality.class_psi(stable, canary) == pytest.approx(float(np.sum((c - s) * np.log(c / s))))
    assert quality.class_psi(stable, stable) == 0.0 and quality.class_psi({}, {}) == 0.0
    # A class one side never predicts is a small share, not a division by zero.
    assert math.isfinite(quality.class_psi({0: 100}, {1: 100})) and quality.class_psi({0: 100}, {1: 100}) > 5


def test_a_shift_that_changes_no_answer_s_agreement_much_is_caught_by_the_psi():
    """Stable balanced; the canary moves half of class 1's images to class 0: agreement 95%
    (above the minimum), accuracy worse by only 5 points on 200 images, the distribution
    visibly shifted."""
    canary = LABELS.copy()
    canary[np.flatnonzero(LABELS == 1)[::2]] = 0
    bounds = QualityBounds(max_class_psi=0.05)
    verdict = quality.judge(answers(LABELS), answers(canary), None, bounds)
    assert verdict.figures["agreement"] == 0.95
    assert [reason.split()[0] for reason in verdict.broken] == ["predicted"], verdict.broken


def test_the_accuracy_test_is_the_gate_s_mcnemar_with_the_roles_swapped():
    stable, canary = mostly_right(10), mostly_right(4)  # canary wrong on 50 images, stable on 20
    verdict = quality.judge(
        answers(stable), answers(canary), LABELS, QualityBounds(**{**OFF, "accuracy_significance": 0.05})
    )
    b = int(((stable == LABELS) & (canary != LABELS)).sum())
    c = int(((stable != LABELS) & (canary == LABELS)).sum())
    assert verdict.figures["stable_only_right"] == b and verdict.figures["canary_only_right"] == c
    assert verdict.figures["accuracy_p_value"] == selection.binomial_tail(b, b + c) < 0.05
    assert len(verdict.broken) == 1
    # A canary better than stable is never rolled back on accuracy: the test is one-sided.
    better = quality.judge(
        answers(canary), answers(stable), LABELS, QualityBounds(**{**OFF, "accuracy_significance": 0.5})
    )
    assert better.figures["accuracy_p_value"] > 0.99 and better.broken == ()


def test_without_labels_there_is_no_accuracy_test():
    verdict = quality.judge(answers(LABELS), answers(LABELS), None, QualityBounds())
    assert len(verdict.within) == 2 and "accuracy_p_value" not in verdict.figures
    assert "accuracy" not in verdict.figures["canary"]


def test_only_images_both_tracks_answered_are_compared():
    stable = answers(LABELS)
    canary = {i: p for i, p in answers(LABELS).items() if i % 2}  # half failed on the canary
    verdict = quality.judge(stable, canary, LABELS, QualityBounds())
    assert verdict.figures["images"] == 100 and verdict.broken == ()
    nothing = quality.judge(stable, {}, LABELS, QualityBounds())
    assert nothing.broken == () and "no image answered by both" in nothing.within[0]


def test_signals_count_classes_and_bin_confidences():
    got = quality.signals(
        {0: Prediction(3, 0.05), 1: Prediction(3, 0.55), 2: Prediction(7, 1.0), 3: Prediction(7, None)}
    )
    assert got["classes"] == {3: 2, 7: 2}
    assert got["confidence_histogram"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # 1.0 in the last bin
    assert got["mean_confidence"] == pytest.approx(1.6 / 3)
    assert quality.signals({0: Prediction(1)})["mean_confidence"] is None


@pytest.mark.parametrize(
    "answer, expected",
    [
        ({"class_id": 3, "probabilities": [0.1, 0.7, 0.2]}, Prediction(3, 0.7)),
        ({"class_id": [4], "class_name": "Coat"}, Prediction(4, None)),
    ],
)
def test_a_prediction_is_read_from_predict_s_answer(answer, expected):
    assert quality.prediction(answer) == expected


@pytest.mark.parametrize("answer", [{}, {"class_id": "3"}, {"class_id": True}, {"class_id": 2.5}, {"class_id": [1, 2]}])
def test_an_answer_without_an_integer_class_is_an_error(answer):
    with pytest.raises(JobError, match="class_id"):
        quality.prediction(answer)


def test_the_verdict_joins_the_decision_on_errors_and_latency():
    window = {"stable": {}, "canary": {}}
    good = quality.Verdict((), ("agreement fine",), {"images": 1})
    bad = quality.Verdict(("agreement low",), (), {"images": 1})
    promote = Decision(PROMOTE, ("errors fine",), window)
    assert quality.combined(promote, good).reasons == ("errors fine", "agreement fine")
    assert quality.combined(promote, good).figures["quality"] == {"images": 1}
    assert quality.combined(promote, bad).outcome == ROLLBACK and quality.combined(promote, bad).reasons == (
        "agreement low",
    )
    rollback = Decision(ROLLBACK, ("errors high",), window)
    assert quality.combined(rollback, bad).reasons == ("errors high", "agreement low")
    assert quality.combined(rollback, good).reasons == ("errors high",)
    inconclusive = Decision(INCONCLUSIVE, ("too few",), window)
    assert quality.combined(inconclusive, bad).outcome == INCONCLUSIVE


def test_the_figures_become_metrics_per_track_and_class():
    verdict = quality.judge(answers(mostly_right(10)), answers([0] * 200), LABELS, QualityBounds())
    got = quality.metrics(verdict.figures)
    assert got["agreement"] == verdict.figures["agreement"] and got["images"] == 200
    assert got["canary_predicted_class_0"] == 200 and "canary_predicted_class_1" not in got
    assert sum(value for key, value in got.items() if key.startswith("stable_predicted_class_")) == 200
    assert got["canary_confidence_bin_9"] == 200 and got["stable_accuracy"] == 0.9


@pytest.mark.parametrize(
    "kwargs",
    [{"min_agreement": 1.5}, {"min_agreement": -0.1}, {"max_class_psi": 0}, {"accuracy_significance": 2}],
)
def test_quality_bounds_out_of_range_are_refused(kwargs):
    with pytest.raises(JobError):
        QualityBounds(**kwargs)
