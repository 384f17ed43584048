"""The selection rule and the promotion gate: exact binomial tails, McNemar's test against
hand-computed and published values, and the decisions they lead to."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from jobs.core.cli import JobError
from jobs.release.selection import Gate, McNemar, best_candidate, binomial_tail, decide, mcnemar


@pytest.mark.parametrize(
    "successes, trials, expected",
    [
        (0, 0, Fraction(1)),  # no disagreement: certain
        (0, 5, Fraction(1)),
        (1, 1, Fraction(1, 2)),
        (3, 3, Fraction(1, 8)),
        (2, 3, Fraction(3 + 1, 8)),  # C(3,2) + C(3,3) of 2^3
        (8, 10, Fraction(45 + 10 + 1, 1024)),  # C(10,8) + C(10,9) + C(10,10) of 2^10
        (7, 8, Fraction(8 + 1, 256)),
    ],
)
def test_binomial_tail_by_hand(successes, trials, expected):
    assert binomial_tail(successes, trials) == pytest.approx(float(expected), rel=1e-15)


def test_binomial_tail_large_counts_stay_exact_and_symmetric():
    # 10,000 disagreements: integer arithmetic, no overflow; P(X >= n/2) = 1/2 + P(X = n/2)/2.
    n = 10_000
    half = binomial_tail(n // 2, n)
    assert half == pytest.approx(0.5 + 0.5 * 0.007978646, rel=1e-6)  # P(X = 5000) = 0.0079786...
    assert binomial_tail(n // 2 + 1, n) + binomial_tail(n // 2, n) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        binomial_tail(-1, 3)


def test_mcnemar_textbook_example_airway_hyperresponsiveness():
    """Fagerland, Lydersen and Laake (2013), BMC Med Res Methodol 13:91, the example from
    Bentur et al. (2009): 21 children, b = 1, c = 7. Published: exact conditional p = 0.070,
    asymptotic McNemar p = 0.034 (statistic 4.5 on one degree of freedom)."""
    test = McNemar(candidate_only=1, served_only=7, images=21)
    assert test.statistic == pytest.approx(4.5)
    assert test.p_value_two_sided == pytest.approx(18 / 256)  # 2 * (C(8,0) + C(8,1)) / 2^8
    assert round(test.p_value_two_sided, 3) == 0.070
    # One-sided for the candidate (b = 1 of 8): nowhere near better.
    assert test.p_value == pytest.approx(1 - 1 / 256)


def test_mcnemar_statistic_wikipedia_example():
    """The worked example of the Wikipedia article on McNemar's test: b = 121, c = 59 gives a
    statistic of 21.35 (p < 0.001)."""
    test = McNemar(candidate_only=121, served_only=59, images=314)
    assert test.statistic == pytest.approx(21.35, abs=0.01)
    assert test.p_value < 1e-5 and test.p_value_two_sided < 1e-4


def test_mcnemar_counts_disagreements_of_paired_vectors():
    candidate = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    served = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
    test = mcnemar(candidate, served)
    assert (test.candidate_only, test.served_only, test.images, test.both) == (3, 1, 8, 2)
    assert (test.candidate_accuracy, test.served_accuracy) == (5 / 8, 3 / 8)
    assert test.gain == pytest.approx((5 - 3) / 8)
    with pytest.raises(ValueError):
        mcnemar(candidate, served[:-1])


def test_the_reported_re_run_is_noise():
    """The issue's case: 0.9970 vs 0.9965 on 2,000 test images is one image; at best b = 1, c = 0."""
    decision = decide(McNemar(1, 0, 2000, both=1993), Gate())
    assert decision.promote is False and decision.outcome == "kept"
    assert "p = 0.5" in decision.reason and "0.9970 against the served 0.9965" in decision.reason
    # Ten against nine, a typical re-run: still a coin toss.
    assert decide(McNemar(10, 9, 2000), Gate()).promote is False


def test_clear_gains_are_promoted_and_min_gain_is_applied():
    clear = McNemar(40, 10, 10_000)  # +0.3 points, p ~ 1e-5
    assert clear.p_value < 1e-4
    assert decide(clear, Gate()).promote is True
    assert decide(clear, Gate()).outcome == "promoted"
    held = decide(clear, Gate(min_gain=0.005))
    assert held.promote is False and "gain below the minimum" in held.reason
    # significance 1 turns the test off: the minimum gain alone decides.
    assert decide(McNemar(3, 1, 1000), Gate(significance=1.0, min_gain=0.001)).promote is True
    assert decide(McNemar(3, 2, 1000), Gate(significance=1.0, min_gain=0.002)).promote is False


def test_nothing_served_and_force():
    assert decide(None, Gate()).promote is True
    forced = decide(McNemar(0, 30, 1000), Gate(), force=True)
    assert forced.promote and forced.forced and forced.outcome == "forced"
    assert "not better beyond noise" in forced.reason


@pytest.mark.parametrize("significance, min_gain", [(0.0, 0.0), (1.5, 0.0), (0.05, 2.0), (0.05, float("nan"))])
def test_gate_refuses_nonsense(significance, min_gain):
    with pytest.raises(JobError):
        Gate(significance, min_gain)


def test_best_candidate_on_validation_ties_go_to_the_first():
    scores = {"cnn": 0.91, "dropout": 0.93, "batchnorm": 0.93}
    assert best_candidate(scores, ["cnn", "dropout", "batchnorm"]) == "dropout"
    assert best_candidate(scores, ["batchnorm", "dropout", "cnn"]) == "batchnorm"
