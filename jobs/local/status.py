"""One screen for local mode: the served version and its history, the runs and their candidates, the datasets,
the tracking store, and whether a model server answers. Reads only the work dir's files (and
one status request): no TensorFlow, no MLflow, under a second.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.core import serving_config
from jobs.core.cli import JobError, duration, parser, positive_int
from jobs.core.paths import MODEL_NAME, Candidate, Work, versions
from jobs.predict.client import Client, ServerError, Unreachable
from jobs.release import history
from jobs.release import state as release_state


def load(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a run in progress)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def served_lines(work: Work) -> list[str]:
    found = versions(work.served())
    if not found:
        return ["served: nothing yet (make local promotes a model)"]
    try:
        version = serving_config.served_version(work) or max(found)
    except JobError:  # a damaged config: the newest on disk, and the pin lines say why
        version = max(found)
    record = history.record(found[version])  # {} when missing or not an object
    what = ", ".join(
        part
        for part in (
            record.get("model") and f"{record['model']} from run {record.get('run_id', '?')}",
            record.get("dataset") and f"trained on {record['dataset']}",
            isinstance(record.get("accuracy"), float) and f"test accuracy {record['accuracy']:.4f}",
            record.get("promoted_at") and f"promoted {record['promoted_at']}",
            record.get("rollback_of")
            and f"restored from version {record.get('restored_from')} in place of version {record['rollback_of']} "
            f"at {record.get('rolled_back_at')}",
        )
        if part
    )
    others = [v for v in found if v != version]
    older = f"; other versions: {', '.join(map(str, others))}" if others else ""
    return [f"served: version {version} in {found[version]} ({history.printable(what)}){older}", *pin_lines(work)]


def pin_lines(work: Work) -> list[str]:
    """What pins the servers to a version (during a canary, or left by one), and the canary
    open, if any: a served version below the newest on disk is never a mystery."""
    lines = []
    for track in serving_config.TRACKS:
        path = serving_config.track_path(work, track)
        try:
            pins = serving_config.pinned(path)
        except JobError as err:
            lines.append(f"pin: {err}")
            continue
        if pins:
            lines.append(f"pin: the {track} servers serve version {', '.join(map(str, pins))} only ({path})")
    try:
        canary = release_state.read_canary(work)
    except JobError as err:
        return [*lines, f"canary: {err}"]
    if canary is not None:
        opened = history.printable(f"run {canary.get('run_id')} at {canary.get('started_at')}")
        lines.append(
            f"canary: open: version {canary['canary_version']} on the canary servers against version "
            f"{canary['stable_version']} ({opened}); the canary step decides, or make canary-end rolls it back"
        )
    elif lines:
        lines.append("canary: none open, but pins are left: make canary-end lifts them")
    return lines


def history_lines(work: Work, limit: int) -> list[str]:
    """The newest promotions and rollbacks of the served history (jobs.history)."""
    lines = history.read(work)
    if not lines:
        return []
    shown = lines[-limit:][::-1]
    head = f"served history ({len(shown)} of {len(lines)}, newest first; {history.path(work)}):"
    return [head, *(f"  {history.describe(line)}" for line in shown)]


def server_line(url: str) -> str:
    try:
        status = Client(url, MODEL_NAME, timeout=2.0).status()
    except Unreachable:
        return f"server: nothing answers at {url} (make serve starts one)"
    except ServerError as err:
        return f"server: {url} answers, but {err}"
    states = ", ".join(f"version {e.get('version')} {e.get('state')}" for e in status.get("model_version_status", []))
    return f"server: {url} serves {MODEL_NAME}: {states or 'no version'}"


def run_lines(work: Work, limit: int) -> list[str]:
    runs = sorted((p for p in work.runs.glob("*") if p.is_dir()), key=os.path.getmtime, reverse=True)
    if not runs:
        return ["runs: none yet (make local)"]
    lines = [f"runs ({min(limit, len(runs))} of {len(runs)}, newest first):"]
    for folder in runs[:limit]:
        promotion = load(work.promotion(folder.name))
        timings = load(work.timings(folder.name)) or {}
        stages = timings.get("stages", {})
        when = datetime.datetime.fromtimestamp(folder.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        if promotion is None:
            outcome = "not finished (running, failed or stopped: see its logs/)"
        elif promotion.get("promoted"):
            outcome = f"promoted {promotion.get('model')} as version {promotion.get('version')}"
        else:
            outcome = f"promoted nothing ({promotion.get('reason', '')})"
        took = f", {duration(timings['wall_seconds'])}" if "wall_seconds" in timings else ""
        lines.append(f"  {folder.name}  {when}{took}: {outcome}")
        found = [Candidate(p) for p in sorted(folder.iterdir())]
        for candidate in (c for c in found if c.run_info.exists() or c.eval.is_dir()):
            metrics = load(candidate.metrics)
            info = load(candidate.run_info) or {}
            params = info.get("params", {})
            parts = [
                f"test accuracy {metrics['accuracy']:.4f}" if metrics else "not evaluated",
                params.get("dataset") and f"{params['dataset']}",
                params.get("workers") and f"{params['workers']} workers",
                info.get("epochs_trained") and f"{info['epochs_trained']} epochs",
                f"train {duration(stages[f'train:{candidate.name}'])}" if f"train:{candidate.name}" in stages else None,
            ]
            lines.append(f"    {candidate.name:<10} " + ", ".join(part for part in parts if part))
    return lines


def dataset_line(work: Work) -> str:
    found = []
    for manifest_path in sorted(work.data.glob("*/manifest.json")):
        counts = (load(manifest_path) or {}).get("counts", {})
        found.append(f"{manifest_path.parent.name} ({counts.get('train', '?')} train, {counts.get('test', '?')} test)")
    return f"datasets: {', '.join(found) if found else 'none ingested yet'}"


def tracking_line(work: Work) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return f"tracking: {uri} (MLFLOW_TRACKING_URI)"
    store = work.mlflow / "mlflow.db"
    if store.exists():
        # make exports MLFLOW_PORT, the port of make ui (it owns the default).
        port = os.environ.get("MLFLOW_PORT", "").strip()
        where = f" on http://127.0.0.1:{port}" if port else ""
        return f"tracking: sqlite:///{store.resolve()} (make ui shows it{where})"
    return f"tracking: no store yet ({store} is created by make local)"


def report(work: Work, url: str | None, limit: int) -> str:
    if not work.root.is_dir():
        return f"work dir: {work.root} does not exist yet: make local DATASET=synthetic (or set WORK_DIR)"
    lines = [f"work dir: {work.root.resolve()}", *served_lines(work), *history_lines(work, limit)]
    if url:
        lines.append(server_line(url))
    lines += [dataset_line(work), tracking_line(work), *run_lines(work, limit)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path(".work"), help="the local work dir")
    p.add_argument("--url", help="also ask the model server at this base URL what it serves")
    p.add_argument("--runs", type=positive_int, default=5, help="how many of the newest runs to show")
    args = p.parse_args(argv)
    print(report(Work(args.work_dir), args.url, args.runs), flush=True)
    return 0
