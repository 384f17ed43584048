"""Plots and the pipeline run's report.md: what a person opens to see how a run went.

Per candidate (beside it in `eval/`, and in its MLflow run): training and validation curves,
the test confusion matrix. Per pipeline run (`<work>/runs/<run>/plots/`, and in the parent
MLflow run): accuracy of every candidate on validation and test, per-class test accuracy of
every candidate, and the validation curves of all candidates together; `report.md` ties them
to the decision. Every title names the candidate (or candidates), the dataset and the run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jobs.ingest.data import CLASS_NAMES, read_manifest
from jobs.train import run_info

TRAIN_COLOUR, VALIDATION_COLOUR, TEST_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax, epochs: Sequence[int]) -> None:
    """Whole epochs only, starting at 1, with room either side of a single point."""
    from matplotlib.ticker import MaxNLocator

    if epochs and max(epochs) - min(epochs) < 20:
        ax.set_xticks(range(min(epochs), max(epochs) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def plot_curves(history: Sequence[Mapping], title: str, path: Path) -> None:
    """Loss and accuracy per epoch, on the training and the validation split."""
    plt = _pyplot()
    epochs = [e["epoch"] + 1 for e in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((left, "loss", "loss (cross-entropy)"), (right, "accuracy", "accuracy")):
        ax.plot(epochs, [e.get(key, np.nan) for e in history], marker="o", color=TRAIN_COLOUR, label="training")
        if any(f"val_{key}" in e for e in history):
            values = [e.get(f"val_{key}", np.nan) for e in history]
            ax.plot(epochs, values, marker="s", color=VALIDATION_COLOUR, label="validation")
        ax.set_ylabel(label)
        _epoch_axis(ax, epochs)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], title: str, path: Path) -> None:
    plt = _pyplot()
    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix, cmap="Blues")
    from matplotlib.ticker import MaxNLocator

    fig.colorbar(image, ax=ax, label="images", ticks=MaxNLocator(integer=True))
    ax.set(xticks=range(len(CLASS_NAMES)), yticks=range(len(CLASS_NAMES)), xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=11)
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticklabels(CLASS_NAMES)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_comparison(
    scores: Mapping[str, Mapping[str, float]],
    served: float | None,
    chosen: str | None,
    title: str,
    path: Path,
    served_version: int | None = None,
) -> None:
    """Each candidate's accuracy on validation and test side by side, the chosen one marked;
    the served version's test accuracy as a bar of its own at the end."""
    plt = _pyplot()
    names = list(scores)
    x = np.arange(len(names))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * (len(names) + 1) + 2), 4.5))
    values = []
    for offset, split, colour in ((-width / 2, "validation", VALIDATION_COLOUR), (width / 2, "test", TEST_COLOUR)):
        heights = [scores[name][split] for name in names]
        values += heights
        bars = ax.bar(x + offset, heights, width, label=split, color=colour)
        ax.bar_label(bars, labels=[f"{h:.4f}" for h in heights], fontsize=8, padding=2)
    labels = [f"{name}\n(chosen)" if name == chosen else name for name in names]
    if served is not None:
        bars = ax.bar([len(names) + width / 2], [served], width, color="#7f7f7f", label="served version, test")
        ax.bar_label(bars, labels=[f"{served:.4f}"], fontsize=8, padding=2)
        values.append(served)
        x = np.append(x, len(names) + width / 2)
        labels.append(f"version {served_version}\n(served)" if served_version is not None else "served")
    ax.set_xticks(np.append(np.arange(len(names)), x[len(names) :]), labels)
    low = min(values) if values else 0.0
    ax.set_ylim(max(0.0, low - (1.0 - low) * 0.5 - 0.02), 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_class(recall: Mapping[str, Mapping[str, float]], title: str, path: Path) -> None:
    """Per-class test accuracy (recall) of every candidate, as a table of colours and values."""
    plt = _pyplot()
    names = list(recall)
    matrix = np.array([[recall[name][cls] for name in names] for cls in CLASS_NAMES])
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(names), 6))
    image = ax.imshow(matrix, cmap="RdYlGn", vmin=max(0.0, float(matrix.min()) - 0.05), vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of the class classified right")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.xaxis.tick_top()
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=9)
    ax.set_title(title, fontsize=11, pad=28)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_validation_curves(histories: Mapping[str, Sequence[Mapping]], title: str, path: Path) -> None:
    """Validation accuracy per epoch of every candidate (training accuracy dotted)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9, 4.5))
    all_epochs: list[int] = []
    for index, (name, history) in enumerate(histories.items()):
        epochs = [e["epoch"] + 1 for e in history]
        all_epochs += epochs
        colour = f"C{index}"
        ax.plot(epochs, [e.get("val_accuracy", np.nan) for e in history], marker="o", color=colour, label=name)
        ax.plot(epochs, [e.get("accuracy", np.nan) for e in history], linestyle=":", color=colour)
    _epoch_axis(ax, sorted(set(all_epochs)))
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    for style, label in (("-", "validation"), (":", "training")):
        handles.append(Line2D([], [], color="grey", linestyle=style))
        labels.append(label)
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def summary(result: Mapping) -> str:
    """The decision in a few lines of markdown (the parent run's description in MLflow)."""
    registered = result.get("registered_version")
    lines = [
        f"**{result['decision']}**: {result['reason']}.",
        f"Served now: version {result['version']}"
        + (f", registered model version {registered} (alias champion)." if registered else "."),
        "Details: report.md and plots/ in this run's artifacts.",
    ]
    return "\n\n".join(lines)


def write_report(work, result: Mapping, names: Sequence[str]) -> Path:
    """`<work>/runs/<run>/report.md`: the candidates, their figures, the decision, the plots."""
    run_id = result["run_id"]
    lines = [f"# Pipeline run {run_id}", ""]
    lines += dataset_lines(work, result["dataset"])
    lines += candidate_lines(work, result, names)
    lines += decision_lines(result)
    lines += plot_lines(work.plots(run_id))
    path = work.report(run_id)
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def dataset_lines(work, dataset: str) -> list[str]:

    manifest = read_manifest(work.dataset(dataset)) or {}
    splits = manifest.get("splits", {})
    if not splits:
        return []
    sizes = ", ".join(
        f"{name} {splits[name]['examples']:,} images (digest `{splits[name]['digest']}`)"
        for name in ("train", "validation", "test")
        if name in splits
    )
    return [f"Dataset **{dataset}** ({manifest.get('source', {}).get('name', dataset)}): {sizes}.", ""]


def candidate_lines(work, result: Mapping, names: Sequence[str]) -> list[str]:

    rows = [
        ("candidate", "validation accuracy", "test accuracy", "epochs", "workers", "seed", "train time", "MLflow run")
    ]
    for name in names:
        info = run_info.read(work.candidate(result["run_id"], name))
        params = info.get("params", {})
        mark = f"**{name}** (chosen)" if name == result["model"] else name
        rows.append(
            (
                mark,
                f"{result['scores'][name]:.4f}",
                f"{result['test_scores'][name]:.4f}",
                str(info.get("epochs_trained", params.get("epochs", "?"))),
                str(params.get("workers", "?")),
                str(params.get("seed", "?")),
                f"{info['train_seconds']:.1f} s" if "train_seconds" in info else "?",
                f"`{info['mlflow_run_id']}`" if info.get("mlflow_run_id") else "untracked",
            )
        )
    return [
        "## Candidates",
        "",
        markdown_table(rows),
        "",
        "Chosen on validation accuracy; test accuracy is the final score.",
        "",
    ]


def decision_lines(result: Mapping) -> list[str]:
    lines = [f"## Decision: {result['decision']}", "", result["reason"] + ".", ""]
    comparison = result.get("mcnemar")
    if comparison:
        gate = result["gate"]
        lines += [
            markdown_table(
                [
                    ("on the test split", "accuracy"),
                    (f"{result['model']} (candidate)", f"{result['accuracy']:.4f}"),
                    (f"version {result['served_version']} (served before)", f"{result['served_accuracy']:.4f}"),
                ]
            ),
            "",
            f"McNemar's test on {comparison['images']:,} paired images: {comparison['candidate_only']} only the "
            f"candidate classifies right, {comparison['served_only']} only the served version; statistic "
            f"{comparison['statistic']:.3f}, exact one-sided p = {comparison['p_value']:.4g} (two-sided "
            f"{comparison['p_value_two_sided']:.4g}); the gate: p <= {gate['significance']:g} and a gain of at least "
            f"{gate['min_gain']:+.4f}.",
            "",
        ]
    registered = (
        f" (registered model version {result['registered_version']}, alias champion)"
        if result.get("registered_version")
        else ""
    )
    lines += [f"Served now: version {result['version']}{registered}.", ""]
    return lines


def plot_lines(plots: Path) -> list[str]:
    lines = ["## Plots", ""]
    captions = {
        "candidates.png": "Accuracy of every candidate on the validation and test splits",
        "per_class.png": "Per-class test accuracy of every candidate",
        "validation_curves.png": "Accuracy per epoch of every candidate",
    }
    for file, caption in captions.items():
        if (plots / file).exists():
            lines += [f"![{caption}](plots/{file})", ""]
    lines += [
        "Per candidate, beside it and in its MLflow run: `eval/training_curves.png` (training and validation "
        "curves), `eval/confusion_matrix.png` (test split).",
        "",
    ]
    return lines
