"""The pipeline's steps, defined once.

The local runner (`jobs.local`) builds its commands from these definitions, and the Argo
workflow (`workflows/e2e.yaml`) runs the same module with the same flags; a test renders
both and fails if they drift apart. Arguments are templates over a small set of parameters:

    work_dir      the shared volume (a PVC in the cluster, WORK_DIR here)
    run_id        one pipeline run (the workflow's name in the cluster)
    dataset       fashion_mnist | idx | synthetic
    epochs        training epochs per candidate
    model         one candidate (train only)
    models        comma-separated candidates
    url           the model server's base URL
    min_accuracy  the smoke check's threshold
    rollout       direct (every server serves a promoted version) | canary (the canary first)
    stable_url, canary_url            each track's servers, for the canary's watch
    canary_seconds, canary_probe_rate how long the canary is watched, probe requests a second
    canary_max_error_rate, canary_max_error_increase, canary_max_p50_ratio,
    canary_max_p95_ratio, canary_min_requests    its bounds (jobs.canary_metrics.Bounds)
"""

from __future__ import annotations

import dataclasses
import string
import sys
from collections.abc import Sequence

from jobs.core.cli import parser, run

# The canary's settings: step parameter -> its flag of jobs.canary.
CANARY_KNOBS = {
    "canary_seconds": "--seconds",
    "canary_probe_rate": "--probe-rate",
    "canary_max_error_rate": "--max-error-rate",
    "canary_max_error_increase": "--max-error-increase",
    "canary_max_p50_ratio": "--max-p50-ratio",
    "canary_max_p95_ratio": "--max-p95-ratio",
    "canary_min_requests": "--min-requests",
}

PARAMETERS = (
    "work_dir",
    "run_id",
    "dataset",
    "epochs",
    "model",
    "models",
    "url",
    "min_accuracy",
    "rollout",
    "stable_url",
    "canary_url",
    *CANARY_KNOBS,
)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    module: str
    args: tuple[str, ...]
    depends: tuple[str, ...] = ()
    per_model: bool = False  # one multi-worker training job per candidate (a TFJob in the cluster)

    def argv(self, **params: str) -> list[str]:
        """The step's arguments with every `{parameter}` filled in."""
        return [arg.format(**params) for arg in self.args]

    def command(self, python: str = "python", **params: str) -> list[str]:
        return [python, "-m", self.module, *self.argv(**params)]

    def parameters(self) -> set[str]:
        return {field for arg in self.args for _, field, _, _ in string.Formatter().parse(arg) if field}


STEPS: tuple[Step, ...] = (
    Step(
        "ingest",
        "jobs.ingest",
        ("--work-dir", "{work_dir}", "--dataset", "{dataset}"),
    ),
    Step(
        "train",
        "jobs.train",
        (
            "--work-dir",
            "{work_dir}",
            "--run-id",
            "{run_id}",
            "--dataset",
            "{dataset}",
            "--model",
            "{model}",
            "--epochs",
            "{epochs}",
        ),
        depends=("ingest",),
        per_model=True,
    ),
    Step(
        "evaluate",
        "jobs.evaluate",
        ("--work-dir", "{work_dir}", "--run-id", "{run_id}", "--dataset", "{dataset}", "--models", "{models}"),
        depends=("train",),
    ),
    Step(
        "promote",
        "jobs.promote",
        (
            "--work-dir",
            "{work_dir}",
            "--run-id",
            "{run_id}",
            "--dataset",
            "{dataset}",
            "--models",
            "{models}",
            "--rollout",
            "{rollout}",
        ),
        depends=("evaluate",),
    ),
    Step(
        "wait-serving",
        "jobs.predict",
        ("--url", "{url}", "--work-dir", "{work_dir}", "--wait-version", "latest"),
        depends=("promote",),
    ),
    Step(
        "smoke",
        "jobs.predict",
        (
            "--url",
            "{url}",
            "--work-dir",
            "{work_dir}",
            "--dataset",
            "{dataset}",
            "--check",
            "--min-accuracy",
            "{min_accuracy}",
        ),
        depends=("wait-serving",),
    ),
    # After a canary promotion: watch it, then promote it to stable or roll it back. Without
    # one (rollout direct, or nothing promoted) it has nothing to watch and says so.
    Step(
        "canary",
        "jobs.canary",
        (
            "--work-dir",
            "{work_dir}",
            "--run-id",
            "{run_id}",
            "--dataset",
            "{dataset}",
            "--stable-url",
            "{stable_url}",
            "--canary-url",
            "{canary_url}",
            *(arg for parameter, flag in CANARY_KNOBS.items() for arg in (flag, f"{{{parameter}}}")),
        ),
        depends=("smoke",),
    ),
)

BY_NAME = {step.name: step for step in STEPS}


def step(name: str) -> Step:
    return BY_NAME[name]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the steps, in order, as the shell would run them (a reference for readers)."""
    parser("Print the pipeline's steps, in order, as the shell would run them.").parse_args(argv)
    example = {name: f"<{name}>" for name in PARAMETERS}
    for s in STEPS:
        after = f"  (after {', '.join(s.depends)})" if s.depends else ""
        print(f"{s.name}:{after}\n  {' '.join(s.command(**example))}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
