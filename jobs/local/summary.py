"""What a local run tells at its end: the table and notes for people, the `name=value` results
and the stages' times for scripts (in the run's folder). `runner` is a `jobs.local.runner.Runner`."""

from __future__ import annotations

import textwrap

from jobs.core.cli import duration
from jobs.core.files import read_json, write_json


def restart_lines(restarts: dict[str, list[dict[str, str]]]) -> list[str]:
    """One line per restart of a training job: which worker ended how, and why."""
    return [
        f"restart {i} of {model}: {r['ended']}: {r['reason']}"
        for model, attempts in restarts.items()
        for i, r in enumerate(attempts, 1)
    ]


def canary_lines(runner) -> list[str]:
    """What the canary step decided, from its record (none: it found no canary to watch)."""
    path = runner.s.work.canary_record(runner.s.run_id)
    if not path.exists():
        return ["canary: none watched (nothing new was promoted)"] if runner.s.rollout == "canary" else []
    record = read_json(path)
    decided = (
        record["action"] if record["decision"] == record["action"] else f"{record['decision']}, so {record['action']}"
    )
    text = (
        f"canary: version {record['canary_version']} on the canary track against {record['stable_version']} on the "
        f"stable one: {decided} ({record['reason']}); every server now serves version {record['served_version']}"
    )
    return [textwrap.fill(text, width=100, subsequent_indent="  ")]


def for_machines(runner, wall: float) -> dict[str, object]:
    promotion = read_json(runner.s.work.promotion(runner.s.run_id))
    return {
        "run_id": runner.s.run_id,
        "best": promotion["model"],
        "promoted": int(promotion["promoted"]),
        "version": promotion["version"],
        "served_accuracy": runner.results.get("smoke", {}).get("accuracy", "nan"),
        "wall_seconds": wall,
    }


def table(runner, wall: float) -> str:
    promotion = read_json(runner.s.work.promotion(runner.s.run_id))
    rows = [("candidate", "test accuracy", "train time", "restarts", "promoted")]
    for model in runner.s.models:
        accuracy = read_json(runner.s.work.candidate(runner.s.run_id, model).metrics)["accuracy"]
        promoted = (
            f"yes: version {promotion['version']}" if promotion["promoted"] and promotion["model"] == model else "no"
        )
        rows.append(
            (
                model,
                f"{accuracy:.4f}",
                duration(runner.timings[f"train:{model}"]),
                str(len(runner.restarts.get(model, []))),
                promoted,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    fit = [
        f"{model} {duration(float(runner.results[f'train:{model}']['train_seconds']))}"
        for model in runner.s.models
        if "train_seconds" in runner.results.get(f"train:{model}", {})
    ]
    served = runner.results.get("smoke", {}).get("accuracy", "?")
    restarts = restart_lines(runner.restarts)
    lines += ["", *restarts] if restarts else []
    stages = ", ".join(f"{name} {duration(seconds)}" for name, seconds in runner.timings.items())
    lines += [
        "",
        textwrap.fill(
            "train time: each training job from starting its workers to their exit: TensorFlow's start-up, "
            f"the epochs (in the training loop: {', '.join(fit) or 'see the logs'}), saving the model, uploading it "
            "to MLflow, and any restarts.",
            width=100,
            subsequent_indent="  ",
        ),
        f"promotion: {promotion['reason']}",
        *canary_lines(runner),
        f"served: {runner.s.work.served()}/{promotion['version']} (test accuracy through the server: {served})",
        f"time: {duration(wall)} in all; {stages}",
        f"logs: {runner.log_dir()}/; results for scripts: {runner.s.work.results(runner.s.run_id)}",
        "next: make serve, then make predict in another terminal; make ui (MLflow), make tensorboard, make status",
    ]
    return "\n".join(lines)


def write(runner, wall: float) -> None:
    """timings.json and results.txt in the run's folder."""
    write_json(runner.s.work.timings(runner.s.run_id), {"stages": runner.timings, "wall_seconds": wall})
    results = for_machines(runner, wall)
    runner.s.work.results(runner.s.run_id).write_text(
        "".join(f"{k}={f'{v:.6g}' if isinstance(v, float) else v}\n" for k, v in results.items())
    )
