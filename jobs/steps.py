"""The pipeline's steps, defined once, and where each of their defaults is owned.

The local runner (`jobs.local`) builds its commands from these definitions, and the Argo
workflow (`workflows/e2e.yaml`) runs the same module with the same flags: `make generate`
writes the workflow's step arguments and parameter defaults from here (`make verify` checks
them). Arguments are templates over a small set of parameters:

    work_dir      the shared volume (a PVC in the cluster, WORK_DIR here)
    run_id        one pipeline run (the workflow's name in the cluster)
    dataset       fashion_mnist | idx | synthetic
    epochs        training epochs per candidate
    patience      epochs without a better validation accuracy before training stops (0: never)
    model         one candidate (train only)
    models        comma-separated candidates
    url           the model server's base URL
    min_accuracy  the smoke check's threshold
    rollout       direct (every server serves a promoted version) | canary (the canary first)
    stable_url, canary_url            each track's servers, for the canary's watch
    canary_seconds, canary_probe_rate how long the canary is watched, probe requests a second
    canary_max_error_rate, canary_max_error_increase, canary_max_p50_ratio,
    canary_max_p95_ratio, canary_min_requests    its bounds (jobs.release.canary_metrics.Bounds)
    canary_min_agreement, canary_max_class_psi,
    canary_accuracy_significance                  on its answers (jobs.release.quality.QualityBounds)

A parameter's default is the default of the flag it fills, read from that job's parser
(`default`); the pipeline's own settings, which no job's flag has, are owned here.
"""

from __future__ import annotations

import argparse
import dataclasses
import string
import sys
from collections.abc import Callable, Sequence

from jobs.core.cli import parser, run
from jobs.evaluate import evaluate
from jobs.ingest import ingest
from jobs.predict import predict
from jobs.release import canary, promote
from jobs.train import train

# The canary's settings: step parameter -> its flag of jobs.canary.
CANARY_KNOBS = {
    "canary_seconds": "--seconds",
    "canary_probe_rate": "--probe-rate",
    "canary_max_error_rate": "--max-error-rate",
    "canary_max_error_increase": "--max-error-increase",
    "canary_max_p50_ratio": "--max-p50-ratio",
    "canary_max_p95_ratio": "--max-p95-ratio",
    "canary_min_requests": "--min-requests",
    "canary_min_agreement": "--min-agreement",
    "canary_max_class_psi": "--max-class-psi",
    "canary_accuracy_significance": "--accuracy-significance",
}

PARAMETERS = (
    "work_dir",
    "run_id",
    "dataset",
    "epochs",
    "patience",
    "model",
    "models",
    "url",
    "min_accuracy",
    "rollout",
    "stable_url",
    "canary_url",
    *CANARY_KNOBS,
)


# The pipeline's own settings: no job has a flag for them.
WORKERS = 2  # worker processes (the TFJob's replicas) per candidate
MIN_ACCURACY = 0.8  # the smoke check's threshold on test accuracy through the server


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    module: str  # what `python -m` runs
    args: tuple[str, ...]
    depends: tuple[str, ...] = ()
    per_model: bool = False  # one multi-worker training job per candidate (a TFJob in the cluster)
    parser: Callable[[], argparse.ArgumentParser] | None = None  # the job's flags and their defaults

    def argv(self, **params: str) -> list[str]:
        """The step's arguments with every `{parameter}` filled in."""
        return [arg.format(**params) for arg in self.args]

    def command(self, python: str = "python", **params: str) -> list[str]:
        return [python, "-m", self.module, *self.argv(**params)]

    def parameters(self) -> set[str]:
        return {field for arg in self.args for _, field, _, _ in string.Formatter().parse(arg) if field}

    def flag_of(self, parameter: str) -> str:
        """The flag a parameter fills in this step's arguments."""
        for flag, arg in zip(self.args, self.args[1:], strict=False):
            if arg == f"{{{parameter}}}":
                return flag
        raise KeyError(f"step {self.name} has no flag for {parameter}")


STEPS: tuple[Step, ...] = (
    Step(
        "ingest",
        "jobs.ingest",
        ("--work-dir", "{work_dir}", "--dataset", "{dataset}"),
        parser=ingest.build_parser,
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
            "--patience",
            "{patience}",
        ),
        depends=("ingest",),
        per_model=True,
        parser=train.build_parser,
    ),
    Step(
        "evaluate",
        "jobs.evaluate",
        ("--work-dir", "{work_dir}", "--run-id", "{run_id}", "--dataset", "{dataset}", "--models", "{models}"),
        depends=("train",),
        parser=evaluate.build_parser,
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
        parser=promote.build_parser,
    ),
    Step(
        "wait-serving",
        "jobs.predict",
        ("--url", "{url}", "--work-dir", "{work_dir}", "--wait-version", "latest"),
        depends=("promote",),
        parser=predict.build_parser,
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
        parser=predict.build_parser,
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
        parser=canary.build_parser,
    ),
)

BY_NAME = {step.name: step for step in STEPS}


def step(name: str) -> Step:
    return BY_NAME[name]


# Parameters whose default is not a job flag's: the pipeline's settings, or a place.
OWN = {"workers": str(WORKERS), "min_accuracy": f"{MIN_ACCURACY:g}"}
PLACES = ("work_dir", "run_id", "model", "url", "stable_url", "canary_url")


def default(parameter: str) -> str:
    """A parameter's default as the pipeline passes it: the default of the first step flag it
    fills (a list as comma-separated names), or the pipeline's own setting."""
    if parameter in OWN:
        return OWN[parameter]
    for s in STEPS:
        if parameter in s.parameters():
            flag = s.flag_of(parameter)
            action = next(a for a in s.parser()._actions if flag in a.option_strings)
            value = action.default
            if isinstance(value, list | tuple):
                return ",".join(map(str, value))
            return f"{value:g}" if isinstance(value, float) else str(value)
    raise KeyError(f"no step takes {parameter}")


def defaults() -> dict[str, str]:
    """Every parameter's default but the places (which a run supplies)."""
    return {name: default(name) for name in (*PARAMETERS, "workers") if name not in PLACES}


# What every parameter is in workflows/e2e.yaml, as an Argo expression (work_dir: the mount).
ARGO = {
    "work_dir": "/work",
    "run_id": "{{workflow.name}}",
    "model": "{{inputs.parameters.model}}",
    "url": "{{workflow.parameters.serving-url}}",
    **{
        name: "{{workflow.parameters." + name.replace("_", "-") + "}}"
        for name in PARAMETERS
        if name not in ("work_dir", "run_id", "model", "url")
    },
}


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
