"""make generate and make verify (hack/generate.py): the workflow's steps and defaults follow
jobs/steps.py and the jobs' parsers without touching anything else in the file, and a script
that reads a knob the Makefile does not declare is named."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from jobs import steps
from tests.helpers import ROOT
from tests.helpers.jobs import generator


@pytest.fixture(scope="module")
def generate():
    return generator()


def test_the_committed_workflow_is_what_generate_writes(generate):
    text = (ROOT / "workflows" / "e2e.yaml").read_text()
    assert generate.workflow(text) == text


def test_what_the_round_trip_would_reindent_stays_as_written(generate):
    """ruamel.yaml writes a sequence of sequences (the exit handler's `steps: - - name:`) with
    its own indentation; only the generator's edits are carried into the text."""
    text = (ROOT / "workflows" / "e2e.yaml").read_text()
    assert "\n        - - name: suspend\n" in text
    drifted = text.replace('--epochs, "{{workflow.parameters.epochs}}",', '--epochs, "3",')
    assert drifted != text and generate.workflow(drifted) == text


def test_drifted_arguments_and_defaults_are_rewritten_and_nothing_else(generate):
    text = (ROOT / "workflows" / "e2e.yaml").read_text()
    drifted = (
        text.replace('value: "5"\n      - name: patience', 'value: "7"\n      - name: patience')
        .replace('--epochs, "{{workflow.parameters.epochs}}",', '--epochs, "3",')
        .replace("command: [python, -m, jobs.evaluate]", "command: [python, -m, jobs.evaluated]")
        .replace("          - --min-requests\n", "")
        .replace("enum: [fashion_mnist, idx, synthetic]", "enum: [fashion_mnist]")
    )
    assert drifted.count("\n") < text.count("\n")
    assert generate.workflow(drifted) == text
    wf = yaml.safe_load(text)
    epochs = next(p for p in wf["spec"]["arguments"]["parameters"] if p["name"] == "epochs")
    assert epochs["value"] == steps.default("epochs") == "5"


def test_the_knob_table_and_make_help_show_the_owners_defaults(generate):
    table = generate.knob_table()
    assert f"| `EPOCHS` | `{steps.default('epochs')}` |" in table
    assert "5" not in dict(generate.makefile_knobs())["EPOCHS"][0], "the Makefile restates no job's default"
    help_text = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "epochs per candidate [5]" in help_text


def test_a_script_reading_an_undeclared_knob_is_named(generate, tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "hack", tmp_path / "hack")
    assert generate.knob_problems(tmp_path) == []
    serve = tmp_path / "hack" / "serve.sh"
    serve.write_text(
        serve.read_text().replace("SERVE_ARGS=${SERVE_ARGS:-}", "SERVE_ARGS=${SERVE_ARGS:-}\nHOST=${HOST:-0.0.0.0}")
    )
    predict = tmp_path / "hack" / "predict.sh"
    predict.write_text(
        predict.read_text().replace("PREDICT_WAIT=${PREDICT_WAIT:-60}", "PREDICT_WAIT=${PREDICT_WAIT:-90}")
    )
    problems = generate.knob_problems(tmp_path)
    assert "hack/serve.sh reads HOST, which the Makefile does not declare" in problems
    assert "hack/predict.sh defaults PREDICT_WAIT to '90', the Makefile to '60'" in problems


def test_verify_passes_on_the_checkout():
    proc = subprocess.run(
        [sys.executable, "hack/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
