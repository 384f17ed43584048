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
"""

from __future__ import annotations

import dataclasses
import string
import sys
from collections.abc import Sequence

from jobs.cli import parser, run

PARAMETERS = ("work_dir", "run_id", "dataset", "epochs", "model", "models", "url", "min_accuracy")


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
        ("--work-dir", "{work_dir}", "--run-id", "{run_id}", "--dataset", "{dataset}", "--models", "{models}"),
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
