"""Model selection: which candidate is best, and whether it should replace the served model.

Choosing: the candidate with the highest accuracy on the validation split (carved from the
training images, see jobs.data), so that choosing never looks at the test split.

Gating: the chosen candidate and the served version classify the same test images; only the
images where exactly one of them is right can tell them apart. With b the images only the
candidate gets right and c those only the served version gets right, McNemar's test asks
whether b is larger than chance would make it: under "equally good", each of the b + c
disagreements is a fair coin, so the exact one-sided p-value is P(X >= b) for
X ~ Binomial(b + c, 1/2). The candidate is promoted when p <= significance and its accuracy
gain is at least min_gain (either rule alone: significance 1, or min_gain 0). Nothing served,
or --force, promotes regardless; the figures are still recorded.

Pure functions, no I/O: jobs.promote feeds them and records what they return.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from jobs.core.cli import JobError

DEFAULT_SIGNIFICANCE = 0.05
DEFAULT_MIN_GAIN = 0.0


def binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2), exactly (integer arithmetic)."""
    if trials < 0 or not 0 <= successes <= trials + 1:
        raise ValueError(f"need 0 <= successes <= trials + 1, got {successes} of {trials}")
    term = math.comb(trials, successes) if successes <= trials else 0
    total = 0
    for k in range(successes, trials + 1):  # C(n, k+1) = C(n, k) (n - k) / (k + 1), exactly
        total += term
        term = term * (trials - k) // (k + 1)
    return total / 2**trials


@dataclasses.dataclass(frozen=True)
class McNemar:
    """A paired comparison of two classifiers on the same images."""

    candidate_only: int  # b: images only the candidate classifies correctly
    served_only: int  # c: images only the served version classifies correctly
    images: int
    both: int = 0  # images both classify correctly (not part of the test; gives the accuracies)

    @property
    def discordant(self) -> int:
        return self.candidate_only + self.served_only

    @property
    def statistic(self) -> float:
        """McNemar's chi-squared statistic (b - c)^2 / (b + c), 0 when they never disagree."""
        if not self.discordant:
            return 0.0
        return (self.candidate_only - self.served_only) ** 2 / self.discordant

    @property
    def p_value(self) -> float:
        """Exact one-sided: how likely a candidate no better than the served version would win
        at least b of the b + c disagreements."""
        return binomial_tail(self.candidate_only, self.discordant)

    @property
    def p_value_two_sided(self) -> float:
        """Exact two-sided (the textbook form): twice the smaller tail, at most 1."""
        low = min(self.candidate_only, self.served_only)
        return min(1.0, 2 * binomial_tail(self.discordant - low, self.discordant))

    @property
    def candidate_accuracy(self) -> float:
        return (self.both + self.candidate_only) / self.images if self.images else 0.0

    @property
    def served_accuracy(self) -> float:
        return (self.both + self.served_only) / self.images if self.images else 0.0

    @property
    def gain(self) -> float:
        """Candidate accuracy minus served accuracy on these images."""
        return (self.candidate_only - self.served_only) / self.images if self.images else 0.0


def mcnemar(candidate_correct: np.ndarray, served_correct: np.ndarray) -> McNemar:
    """Counts the disagreements of two per-image correctness vectors (same images, same order)."""
    candidate_correct = np.asarray(candidate_correct, bool)
    served_correct = np.asarray(served_correct, bool)
    if candidate_correct.shape != served_correct.shape:
        raise ValueError(f"paired vectors differ in shape: {candidate_correct.shape} vs {served_correct.shape}")
    return McNemar(
        candidate_only=int((candidate_correct & ~served_correct).sum()),
        served_only=int((~candidate_correct & served_correct).sum()),
        images=int(candidate_correct.size),
        both=int((candidate_correct & served_correct).sum()),
    )


@dataclasses.dataclass(frozen=True)
class Gate:
    significance: float = DEFAULT_SIGNIFICANCE
    min_gain: float = DEFAULT_MIN_GAIN

    def __post_init__(self):
        if not 0.0 < self.significance <= 1.0:
            raise JobError(f"the significance must be above 0 and at most 1, not {self.significance}")
        if not -1.0 <= self.min_gain <= 1.0:
            raise JobError(f"the minimum gain is a difference of accuracies (-1 to 1), not {self.min_gain}")


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    test: McNemar | None = None  # None when nothing is served to compare with
    forced: bool = False

    @property
    def outcome(self) -> str:
        if not self.promote:
            return "kept"
        return "forced" if self.forced else "promoted"


def decide(test: McNemar | None, gate: Gate, force: bool = False) -> Decision:
    """Promote when nothing is served, when the candidate is better beyond noise by `gate`, or
    when forced. `test` compares the candidate with the served version on the test split."""
    if test is None:
        return Decision(True, "nothing is served yet")
    figures = (
        f"test accuracy {test.candidate_accuracy:.4f} against the served {test.served_accuracy:.4f} on "
        f"{test.images:,} images, {test.candidate_only} of them only the candidate gets right and "
        f"{test.served_only} only the served; McNemar exact p = {test.p_value:.3g}"
    )
    significant = test.p_value <= gate.significance
    enough = test.gain >= gate.min_gain
    if significant and enough:
        return Decision(True, f"better beyond noise: {figures} (<= {gate.significance:g})", test)
    why = f"p > {gate.significance:g}" if not significant else f"gain below the minimum {gate.min_gain:+.4f}"
    if force:
        return Decision(True, f"forced, although not better beyond noise: {figures} ({why})", test, forced=True)
    return Decision(False, f"not better beyond noise: {figures} ({why})", test)


def best_candidate(validation_accuracy: Mapping[str, float], order: Sequence[str]) -> str:
    """The candidate with the highest validation accuracy; a tie goes to the first in `order`."""
    return max(order, key=lambda name: validation_accuracy[name])
