"""What the canary predicts, judged against the stable version on the same probe images.

Errors and latency (jobs.release.canary_metrics) say whether the canary answers; these say
whether its answers make sense. Both tracks classify the same test images (the probe traffic
sends image i to each), so the comparison is paired:

    agreement   the share of the images on which the canary predicts the stable version's
                class. A retrained model changes a few answers; one that disagrees on many
                is another model in kind (a broken export, a shuffled label map).
    class PSI   the shift of the predicted class distribution, as the population stability
                index: sum over classes of (c - s) ln(c / s), with s and c each track's share
                of the images predicted as that class (half an image added to every class, so
                a class one side never predicts counts as a small share, not as a log of 0).
                It measures the size of the shift, whatever the number of images, and has
                conventional readings: below 0.1 no real shift, 0.1-0.25 a moderate one,
                above 0.25 a major one. (A chi-square test would call any shift significant
                once enough images are sent, and assumes independent samples, which paired
                answers on the same images are not.)
    accuracy    where the probes carry labels (the test split does): McNemar's exact test of
                the promotion gate (jobs.release.selection), with the roles swapped. The gate
                asks whether the candidate is better than the served version beyond noise;
                here the question is whether the stable version is better than the canary
                beyond noise, from the images only one of them gets right.

Each has a bound (`QualityBounds`, flags of jobs.canary); `judge` returns the bounds broken
and those kept, with the figures, and `combined` folds them into the decision on errors and
latency. The same answers give the prediction signals a model server cannot export (TF
Serving has no per-class counts): each track's predicted classes and a histogram of its
confidence (the top probability), recorded with the decision.

Pure functions, no I/O: jobs.canary collects the answers and records what these return.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from jobs.core.cli import JobError
from jobs.release.canary_metrics import INCONCLUSIVE, PROMOTE, ROLLBACK, Decision
from jobs.release.selection import DEFAULT_SIGNIFICANCE, mcnemar

CONFIDENCE_BINS = 10  # the confidence histogram: [0, 0.1), [0.1, 0.2), ... [0.9, 1]
SMOOTHING = 0.5  # images added to every class before the PSI's shares are taken
# The figures of the two tracks together (the rest are per track).
PAIRED = ("images", "agreement", "class_psi", "accuracy_p_value", "stable_only_right", "canary_only_right")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One answer to a probe: the class predicted and its probability (None when the model
    returns no probabilities)."""

    class_id: int
    confidence: float | None = None


def prediction(answer: Mapping) -> Prediction:
    """A Prediction from one of predict's answers (jobs.predict.client.Client.classify); an
    answer without an integer class_id is an error, as a failed request is."""
    class_id = answer.get("class_id")
    if isinstance(class_id, list) and len(class_id) == 1:  # a model that keeps a [1] dimension
        class_id = class_id[0]
    if isinstance(class_id, bool) or not isinstance(class_id, int):
        raise JobError(f"an answer without an integer class_id: {str(answer)[:120]}")
    probabilities = answer.get("probabilities")
    confidence = None
    if isinstance(probabilities, list) and probabilities and all(isinstance(p, int | float) for p in probabilities):
        confidence = float(max(probabilities))
    return Prediction(class_id, confidence)


@dataclasses.dataclass(frozen=True)
class QualityBounds:
    """What the canary's answers must stay within, against the stable ones, to be promoted."""

    min_agreement: float = 0.8  # images given the stable version's class / images (0: off)
    max_class_psi: float = 0.25  # the predicted class distribution's shift (PSI)
    accuracy_significance: float = DEFAULT_SIGNIFICANCE  # McNemar's p at or below: stable is better (0: off)

    def __post_init__(self):
        if not 0 <= self.min_agreement <= 1:
            raise JobError(f"min_agreement must be between 0 and 1, got {self.min_agreement}")
        if not self.max_class_psi > 0:
            raise JobError(f"max_class_psi must be above 0, got {self.max_class_psi}")
        if not 0 <= self.accuracy_significance <= 1:
            raise JobError(f"accuracy_significance must be between 0 and 1, got {self.accuracy_significance}")


def class_psi(stable: Mapping[int, int], canary: Mapping[int, int]) -> float:
    """The population stability index of the canary's predicted classes against the stable
    ones', from the count of images predicted as each class (see the module's docstring)."""
    classes = sorted(set(stable) | set(canary))
    if not classes:
        return 0.0
    s = np.array([stable.get(k, 0) for k in classes], float) + SMOOTHING
    c = np.array([canary.get(k, 0) for k in classes], float) + SMOOTHING
    s, c = s / s.sum(), c / c.sum()
    return float(np.sum((c - s) * np.log(c / s)))


def signals(answers: Mapping[int, Prediction]) -> dict:
    """One track's prediction signals: images per predicted class, and its confidence as a
    histogram of CONFIDENCE_BINS equal bins and a mean (None without probabilities)."""
    classes: dict[int, int] = {}
    for answer in answers.values():
        classes[answer.class_id] = classes.get(answer.class_id, 0) + 1
    confidences = [a.confidence for a in answers.values() if a.confidence is not None]
    histogram = [0] * CONFIDENCE_BINS
    for confidence in confidences:
        histogram[min(CONFIDENCE_BINS - 1, max(0, math.floor(confidence * CONFIDENCE_BINS)))] += 1
    return {
        "classes": dict(sorted(classes.items())),
        "confidence_histogram": histogram,
        "mean_confidence": sum(confidences) / len(confidences) if confidences else None,
    }


@dataclasses.dataclass(frozen=True)
class Verdict:
    broken: tuple[str, ...]
    within: tuple[str, ...]
    figures: dict  # images, agreement, class_psi, the McNemar counts and p; per track: accuracy, signals


def judge(
    stable: Mapping[int, Prediction],
    canary: Mapping[int, Prediction],
    labels: np.ndarray | None,
    bounds: QualityBounds,
) -> Verdict:
    """The canary's answers against the stable ones on the images both answered (image index
    -> Prediction); `labels` (by image index, or None) adds the accuracy test."""
    paired = sorted(set(stable) & set(canary))
    s = {i: stable[i] for i in paired}
    c = {i: canary[i] for i in paired}
    figures: dict = {"images": len(paired), "stable": signals(s), "canary": signals(c)}
    if not paired:
        return Verdict((), ("no image answered by both tracks: their answers not compared",), figures)
    broken, within = [], []

    agreement = sum(s[i].class_id == c[i].class_id for i in paired) / len(paired)
    figures["agreement"] = agreement
    low = agreement < bounds.min_agreement
    (broken if low else within).append(
        f"agreement with stable {agreement:.1%} of {len(paired)} images, "
        f"{'below' if low else 'at or above'} the minimum {bounds.min_agreement:.1%}"
    )

    psi = class_psi(figures["stable"]["classes"], figures["canary"]["classes"])
    figures["class_psi"] = psi
    shifted = psi > bounds.max_class_psi
    (broken if shifted else within).append(
        f"predicted class shift PSI {psi:.3f} {'above' if shifted else 'within'} {bounds.max_class_psi:g}"
    )

    if labels is not None:
        truth = np.asarray(labels)[paired]
        # The gate's test with the roles swapped: is the stable version better than the canary?
        test = mcnemar(
            np.array([s[i].class_id for i in paired]) == truth, np.array([c[i].class_id for i in paired]) == truth
        )
        figures["stable"]["accuracy"] = test.candidate_accuracy
        figures["canary"]["accuracy"] = test.served_accuracy
        figures.update(stable_only_right=test.candidate_only, canary_only_right=test.served_only)
        figures["accuracy_p_value"] = test.p_value
        worse = test.p_value <= bounds.accuracy_significance
        (broken if worse else within).append(
            f"accuracy {test.served_accuracy:.2%} against stable's {test.candidate_accuracy:.2%} "
            f"({test.served_only} images only the canary gets right, {test.candidate_only} only stable); "
            f"McNemar exact p = {test.p_value:.3g} that stable is no better, "
            f"{'at or below' if worse else 'above'} {bounds.accuracy_significance:g}"
        )
    return Verdict(tuple(broken), tuple(within), figures)


def combined(decision: Decision, verdict: Verdict) -> Decision:
    """The decision on errors and latency with the answers' verdict: a bound broken on either
    side rolls the canary back, naming every bound it broke; an inconclusive window stays so."""
    figures = {**decision.figures, "quality": verdict.figures}
    if decision.outcome == INCONCLUSIVE:
        return Decision(INCONCLUSIVE, decision.reasons, figures)
    if decision.outcome == ROLLBACK or verdict.broken:
        broken = decision.reasons if decision.outcome == ROLLBACK else ()
        return Decision(ROLLBACK, (*broken, *verdict.broken), figures)
    return Decision(PROMOTE, (*decision.reasons, *verdict.within), figures)


def metrics(figures: Mapping) -> dict[str, float]:
    """The verdict's figures as MLflow metrics: the paired ones, then each track's accuracy,
    mean confidence, images per predicted class and confidence histogram."""
    out = {key: float(figures[key]) for key in PAIRED if figures.get(key) is not None}
    for track in ("stable", "canary"):
        shown = figures.get(track, {})
        for key in ("accuracy", "mean_confidence"):
            if shown.get(key) is not None:
                out[f"{track}_{key}"] = float(shown[key])
        for class_id, count in shown.get("classes", {}).items():
            out[f"{track}_predicted_class_{class_id}"] = float(count)
        for i, count in enumerate(shown.get("confidence_histogram", ())):
            out[f"{track}_confidence_bin_{i}"] = float(count)
    return out
