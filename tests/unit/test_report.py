"""Plots and report.md: whole epochs on the axes, titles that say what and where, a report that
states the decision with its figures."""

from __future__ import annotations

import pytest

from jobs.core.files import write_json
from jobs.core.paths import Work
from jobs.evaluate import report
from jobs.ingest.data import CLASS_NAMES

HISTORY = [
    {
        "epoch": e,
        "loss": 1.0 / (e + 1),
        "accuracy": 0.5 + 0.1 * e,
        "val_loss": 1.1 / (e + 1),
        "val_accuracy": 0.5 + 0.09 * e,
    }
    for e in range(3)
]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, kept open for inspection."""
    plt = report._pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    for fig in kept:
        plt.close(fig)


def ticks_are_whole_epochs(ax) -> bool:
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if low <= t <= high]
    return bool(shown) and all(float(t).is_integer() and t >= 1 for t in shown)


def test_training_curves(tmp_path, figures):
    report.plot_curves(HISTORY, "cnn on synthetic, run r1", tmp_path / "curves.png")
    (fig,) = figures
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert fig._suptitle.get_text() == "cnn on synthetic, run r1"
    for ax in fig.axes:
        assert ticks_are_whole_epochs(ax)
        assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]


def test_one_epoch_or_many_are_whole_ticks(tmp_path, figures):
    report.plot_curves(HISTORY[:1], "cnn", tmp_path / "one.png")
    many = [{**HISTORY[0], "epoch": e} for e in range(60)]
    report.plot_curves(many, "cnn", tmp_path / "many.png")
    for fig in figures:
        for ax in fig.axes:
            assert ticks_are_whole_epochs(ax)


def test_comparisons(tmp_path, figures):
    scores = {"cnn": {"validation": 0.91, "test": 0.905}, "dropout": {"validation": 0.92, "test": 0.915}}
    title = "cnn, dropout on synthetic, run r1: accuracy"
    report.plot_comparison(scores, 0.90, "dropout", title, tmp_path / "c.png", served_version=3)
    recall = {name: dict.fromkeys(CLASS_NAMES, 0.9) for name in scores}
    report.plot_per_class(recall, "cnn, dropout on synthetic, run r1", tmp_path / "p.png")
    report.plot_validation_curves({"cnn": HISTORY, "dropout": HISTORY}, "curves, run r1", tmp_path / "v.png")
    comparison, per_class, curves = (fig.axes[0] for fig in figures)
    assert "run r1" in comparison.get_title() and "run r1" in per_class.get_title()
    assert [t.get_text() for t in comparison.get_xticklabels()] == ["cnn", "dropout\n(chosen)", "version 3\n(served)"]
    assert comparison.get_ylim()[0] > 0.5  # zoomed to where the bars differ
    assert [t.get_text() for t in per_class.get_yticklabels()] == list(CLASS_NAMES)
    assert ticks_are_whole_epochs(curves)
    for name in ("c", "p", "v"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_report_states_candidates_decision_and_plots(tmp_path):
    work = Work(tmp_path)
    for name, seconds in (("cnn", 12.5), ("dropout", 20.0)):
        write_json(
            work.candidate("r1", name).run_info,
            {"mlflow_run_id": f"id-{name}", "params": {"workers": 2, "seed": 0, "epochs": 3}, "train_seconds": seconds},
        )
    (work.run("r1") / "plots").mkdir(parents=True)
    (work.run("r1") / "plots" / "candidates.png").write_bytes(b"png")
    result = {
        "run_id": "r1",
        "dataset": "synthetic",
        "model": "dropout",
        "validation_accuracy": 0.92,
        "accuracy": 0.915,
        "scores": {"cnn": 0.91, "dropout": 0.92},
        "test_scores": {"cnn": 0.905, "dropout": 0.915},
        "served_version": 1,
        "served_accuracy": 0.914,
        "gate": {"significance": 0.05, "min_gain": 0.0},
        "mcnemar": {
            "candidate_only": 3,
            "served_only": 1,
            "images": 2000,
            "statistic": 1.0,
            "p_value": 0.3125,
            "p_value_two_sided": 0.625,
            "gain": 0.001,
        },
        "decision": "kept",
        "reason": "not better beyond noise",
        "version": 1,
        "registered_version": None,
    }
    text = report.write_report(work, result, ["cnn", "dropout"]).read_text()
    assert text.startswith("# Pipeline run r1")
    assert "| **dropout** (chosen) | 0.9200 | 0.9150 | 3 | 2 | 0 | 20.0 s | `id-dropout` |" in text
    assert "## Decision: kept" in text and "exact one-sided p = 0.3125" in text
    assert "![Accuracy of every candidate on the validation and test splits](plots/candidates.png)" in text
    assert "per_class.png" not in text  # only plots that exist
    assert "Served now: version 1." in text
    summary = report.summary(result)
    assert summary.startswith("**kept**: not better beyond noise.") and "Served now: version 1." in summary
