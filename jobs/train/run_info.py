"""A candidate's run.json, which the steps of a pipeline run share: its MLflow run id
(`mlflow_run_id`) and LoggedModel id (`model_id`), its parameters and results, and how often
its training started and restarted (with each worker's starts counted beside it)."""

from __future__ import annotations

from jobs.core.cli import JobError
from jobs.core.files import read_json, write_json
from jobs.core.paths import Candidate


def read(candidate: Candidate) -> dict:
    """The candidate's run.json; empty before its training started tracking."""
    return read_json(candidate.run_info) if candidate.run_info.exists() else {}


def record_restart(candidate: Candidate, restart: dict[str, str]) -> None:
    """Adds a restart of the candidate's training (how a worker ended, and why) to its run.json.
    jobs.local calls it between attempts; in a cluster the pods' statuses hold the same."""
    info = read(candidate)
    write_json(candidate.run_info, {**info, "restarts": [*info.get("restarts", []), restart]})


def restart_tags(info: dict) -> dict[str, str]:
    """MLflow tags saying how many times the training restarted and why: the restarts recorded
    by a supervisor, or at least the chief's own earlier attempts (a TFJob records no reason)."""
    recorded = info.get("restarts", [])
    count = max(len(recorded), info.get("attempts", 1) - 1)
    tags = {"restarts": str(count)}
    tags.update({f"restart.{i}": f"{r['ended']}: {r['reason']}" for i, r in enumerate(recorded, 1)})
    return tags


def count_attempt(candidate: Candidate, worker: str, max_attempts: int) -> int:
    """Counts this worker's start for the candidate on the shared volume and returns the count;
    past `max_attempts` the worker gives up with exit 1. A TFJob with restartPolicy ExitCode
    recreates a worker that exits 128-255 however often it happens (the operator's
    backoffLimit counts only restarts in place), so a worker killed on every attempt (out of
    memory, say) would otherwise retry until the job's deadline: exit 1 fails the job for good."""
    path = candidate.attempts(worker)
    attempts = (read_json(path).get("attempts", 0) if path.exists() else 0) + 1
    if attempts > max_attempts:
        raise JobError(
            f"{worker} of {candidate.name} has started {max_attempts} times already "
            f"(--max-attempts {max_attempts}); each earlier attempt was killed or lost a peer: "
            "see the earlier workers' logs and their exit statuses"
        )
    write_json(path, {"attempts": attempts})
    return attempts


def reset_attempts(candidate: Candidate, worker: str) -> None:
    """Forgets this worker's starts once its training has succeeded: the bound is on the
    attempts of one training, so a run id used again (a nightly job) starts from one."""
    candidate.attempts(worker).unlink(missing_ok=True)
