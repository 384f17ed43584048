"""The Makefile's knobs: declared once (a `# knob:` line above `NAME ?= value`), listed by
`make help` from there, and each one set reaches the job that uses it: make exports it, the
hack/ script passes it on, the job's parser takes it. An empty pipeline knob leaves the job's
default in force: the pipeline's, which the steps' own parsers own (jobs.steps.default)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from jobs import steps
from jobs.ingest import data
from jobs.local import settings as local_settings
from tests.helpers import ROOT
from tests.helpers.jobs import makefile_knobs

KNOBS = makefile_knobs()
# A value to set for each knob `make local` uses: (the value, jobs.local's attribute, parsed).
LOCAL = {
    "WORK_DIR": ("elsewhere", "work_dir", Path("elsewhere")),
    "DATASET": ("synthetic", "dataset", "synthetic"),
    "EPOCHS": ("7", "epochs", 7),
    "PATIENCE": ("2", "patience", 2),
    "WORKERS": ("3", "workers", 3),
    "MODELS": ("dropout,cnn", "models", ["dropout", "cnn"]),
    "MIN_ACCURACY": ("0.55", "min_accuracy", 0.55),
    "PROMOTE": ("force", "promote", "force"),
    "ROLLOUT": ("canary", "rollout", "canary"),
    "CANARY_SECONDS": ("45", "canary_seconds", 45.0),
    "INGEST_ARGS": ("--train-size 100", "ingest_args", "--train-size 100"),
    "TRAIN_ARGS": ("--seed 3", "train_args", "--seed 3"),
    "CANARY_ARGS": ("--min-agreement 0.7", "canary_args", "--min-agreement 0.7"),
}
# The knobs `make pipeline` passes as workflow parameters.
WORKFLOW = {"DATASET": "dataset", "EPOCHS": "epochs", "PATIENCE": "patience", "WORKERS": "workers", "MODELS": "models"}
WORKFLOW["MIN_ACCURACY"] = "min-accuracy"


def make_env(**knobs: str) -> dict[str, str]:
    """The environment make gives its recipes, with `knobs` set on the command line."""
    env = {k: v for k, v in os.environ.items() if k not in KNOBS and not k.startswith("MAKE")}
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "_env: ; @env -0", "_env"]
        + [f"{k}={v}" for k, v in knobs.items()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)


def recorder(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def local_argv(tmp_path: Path, **knobs: str) -> list[str]:
    """The jobs.local arguments that `make local` with `knobs` runs (through hack/local.sh)."""
    venv = tmp_path / "venv"
    record = tmp_path / "argv"
    recorder(venv / "bin", "python", f'printf "%s\\0" "$@" > "{record}"')
    env = {**make_env(**knobs), "VENV": str(venv)}
    subprocess.run(["hack/local.sh"], cwd=ROOT, env=env, check=True, timeout=60)
    argv = record.read_text().split("\0")[:-1]
    assert argv[:2] == ["-m", "jobs.local"], argv
    return argv[2:]


def test_make_help_lists_every_knob_from_its_declaration():
    text = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for name, (_, what) in KNOBS.items():
        assert re.search(rf"^  {name} +{re.escape(what)}", plain, re.M), f"make help does not list {name}"
    exported = make_env()
    assert set(KNOBS) <= set(exported), "every knob is exported to the scripts"


def test_every_local_knob_reaches_jobs_local(tmp_path):
    argv = local_argv(tmp_path, **{name: value for name, (value, _, _) in LOCAL.items()})
    args = local_settings.build_parser().parse_args(argv)
    for name, (_, attribute, parsed) in LOCAL.items():
        assert getattr(args, attribute) == parsed, f"make local {name}=... did not reach jobs.local: {argv}"


def test_the_extra_canary_flags_reach_the_canary_step(tmp_path, monkeypatch):
    """CANARY_ARGS: jobs.local passes them after the step's own flags, so they win."""
    from jobs.local.runner import Runner
    from jobs.release import canary

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY"):  # settings_from sets them
        monkeypatch.setenv(name, "")
    args = local_settings.build_parser().parse_args(
        ["--work-dir", str(tmp_path / "work"), "--canary-args=--min-agreement 0.7 --max-class-psi 0.1"]
    )
    runner = Runner(local_settings.settings_from(args))
    command = runner.command(steps.step("canary"))
    assert command[1:3] == ["-m", "jobs.canary"]
    parsed = canary.build_parser().parse_args(command[3:])
    assert (parsed.min_agreement, parsed.max_class_psi, parsed.accuracy_significance) == (0.7, 0.1, 0.05)


def test_empty_knobs_leave_the_pipelines_defaults(tmp_path):
    """An empty knob is not passed on; jobs.local's defaults are the pipeline's, which the
    workflow's parameters are generated from too (make verify keeps them so)."""
    argv = local_argv(tmp_path)
    assert argv == [f"--work-dir={KNOBS['WORK_DIR'][0]}"], "an empty knob is not passed on"
    parser = local_settings.build_parser()
    workflow = yaml.safe_load((ROOT / "workflows/e2e.yaml").read_text())
    parameters = {p["name"]: p for p in workflow["spec"]["arguments"]["parameters"]}
    for name, parameter in WORKFLOW.items():
        default = parser.get_default(LOCAL[name][1])
        default = (
            ",".join(default)
            if isinstance(default, list | tuple)
            else f"{default:g}"
            if isinstance(default, float)
            else str(default)
        )
        assert default == steps.default(parameter.replace("-", "_")), (
            f"{name}: jobs.local's default is not the pipeline's"
        )
        assert str(parameters[parameter]["value"]) == default, f"{name}: jobs.local and workflows/e2e.yaml differ"
        assert not KNOBS[name][0], f"the Makefile restates {name}'s default"
    assert parameters["dataset"]["enum"] == list(data.SOURCES)


def test_every_pipeline_knob_reaches_the_workflow(tmp_path):
    lib = (ROOT / "hack/lib.sh").read_text()
    argo_version = re.search(r"^ARGO_VERSION=(\S+)", lib, re.M)[1]
    record = tmp_path / "argo-submit"
    stubs = tmp_path / "bin"
    recorder(
        stubs,
        "argo",
        f'case "$1" in version) echo "argo: {argo_version}" ;; '
        f'submit) printf "%s\\n" "$@" > "{record}"; echo workflow/wf ;; esac',
    )
    recorder(
        stubs,
        "kubectl",
        'case "$*" in *"--client"*) echo "  minor: \\"99\\"" ;; *status.phase*) echo Succeeded ;; esac',
    )
    knobs = {name: LOCAL[name][0] for name in WORKFLOW}
    env = {**make_env(**knobs), "IMAGE": "fmnist-jobs:test"}
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["hack/pipeline.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    submitted = record.read_text().splitlines()
    for name, parameter in WORKFLOW.items():
        assert f"{parameter}={knobs[name]}" in submitted, f"make pipeline {name}=... is not passed: {submitted}"


@pytest.mark.parametrize("name", sorted(set(KNOBS) - set(LOCAL)))
def test_every_other_knob_is_read_by_a_script(name):
    readers = [p.name for p in (ROOT / "hack").glob("*.sh") if re.search(rf"\$\{{{name}\b", p.read_text())]
    assert readers or re.search(rf"\$\({name}\)", (ROOT / "Makefile").read_text()), f"no script reads {name}"


def test_rollback_knobs_reach_jobs_rollback(tmp_path):
    """make rollback TO=... REASON=... (WHERE=local): the flags jobs.rollback's parser takes;
    an empty TO leaves its default, an empty REASON or an unknown WHERE stops before it."""
    from jobs.release import rollback

    venv = tmp_path / "venv"
    record = tmp_path / "argv"
    recorder(venv / "bin", "python", f'printf "%s\\0" "$@" > "{record}"')

    def script(**knobs: str) -> subprocess.CompletedProcess:
        env = {**make_env(**knobs), "VENV": str(venv)}
        return subprocess.run(["hack/rollback.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert script(TO="2", REASON="v3 misreads sandals", PORT="8600").returncode == 0
    argv = record.read_text().split("\0")[:-1]
    assert argv[:2] == ["-m", "jobs.rollback"], argv
    args = rollback.build_parser().parse_args(argv[2:])
    assert (args.to, args.reason, args.url, str(args.work_dir)) == (
        2,
        "v3 misreads sandals",
        "http://127.0.0.1:8600",
        ".work",
    )
    assert script(REASON="why").returncode == 0
    assert rollback.build_parser().parse_args(record.read_text().split("\0")[2:-1]).to == rollback.PREVIOUS
    record.unlink()
    for knobs, needle in (({"REASON": " "}, 'REASON="..." is required'), ({"REASON": "x", "WHERE": "moon"}, "WHERE")):
        proc = script(**knobs)
        assert proc.returncode != 0 and needle in proc.stderr and not record.exists(), proc.stderr


def test_no_knob_is_a_variable_the_tests_or_jobs_read():
    """make exports every knob to its recipes, make test's included: a knob named like a variable
    the tests or jobs read (SERVING_URL points the serving tests at another server) would change
    what they do. Only the knobs meant for them are shared (VENV, the make ui port)."""
    meant = {"VENV", "MLFLOW_PORT"}
    read = set()
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "jobs").rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        read |= set(re.findall(r"environ(?:\.get)?[(\[]\"([A-Z_]+)\"", path.read_text()))
    assert read, "no environment variable found: the pattern is wrong"
    assert not (set(KNOBS) & read) - meant, f"knobs that the tests or jobs read: {(set(KNOBS) & read) - meant}"


@pytest.mark.parametrize(
    ("target", "knob", "value", "needle"),
    [
        ("local", "DATASET", "fashion", "invalid choice: 'fashion'"),
        ("local", "EPOCHS", "abc", "not a whole number: 'abc'"),
        ("local", "MODELS", "cnn,resnet", "unknown resnet"),
        ("local", "TRAIN_ARGS", '--seed "1', "No closing quotation"),
        ("predict", "SAMPLES", "0", "must be at least 1"),
        ("predict", "PREDICT_WAIT", "soon", "not a number: 'soon'"),
        ("serve", "PORT", "85o1", "not a port number: '85o1'"),
    ],
)
def test_a_bad_knob_is_named_as_typed_with_make_help(tmp_path, target, knob, value, needle):
    """The error names the knob the user typed and points at make help, not at the flag the
    script turned it into or the job's --help: make local DATASET=fashion is what they wrote."""
    work = tmp_path / "work"
    (work / "models" / "fmnist").mkdir(parents=True)  # make serve checks that much first
    env = {k: v for k, v in make_env().items() if k not in KNOBS}
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", target, f"{knob}={value}", f"WORK_DIR={work}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {knob}: "), proc.stderr
    assert needle in errors[0] and errors[0].endswith("(make help lists the knobs)"), errors[0]
    assert "--" not in errors[0].replace(value, ""), f"the error names a flag: {errors[0]}"
    assert "python -m" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if (knob, value) == ("EPOCHS", "abc"):  # the example docs/troubleshooting.md quotes
        assert errors[0] in (ROOT / "docs/troubleshooting.md").read_text(), errors[0]


def test_a_job_run_by_hand_names_its_own_flags():
    """Outside make, the same mistake names the flag and the job's --help; the knobs a script
    passed are not inherited by the jobs the runner starts (FMNIST_KNOBS is read once)."""
    proc = subprocess.run(
        [".venv/bin/python", "-m", "jobs.local", "--dataset", "fashion"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "FMNIST_KNOBS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: argument --dataset: invalid choice: 'fashion'"), proc.stderr
    assert proc.stderr.rstrip().endswith("(see python -m jobs.local --help)"), proc.stderr
    probe = "import os, jobs.core.cli as cli; print(cli.named('--dataset'), os.environ.get('FMNIST_KNOBS'))"
    proc = subprocess.run(
        [".venv/bin/python", "-c", probe],
        cwd=ROOT,
        env={**os.environ, "FMNIST_KNOBS": "DATASET=--dataset"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.split() == ["DATASET", "None"], proc.stdout + proc.stderr
