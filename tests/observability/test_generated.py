"""The files `make generate` writes from monitoring/ are committed as it writes them (the SLO
rules, the cluster's PrometheusRule, the dashboards), and its --check says which one is not."""

from __future__ import annotations

import subprocess
import sys

import yaml

from monitoring import generate
from tests.helpers import ROOT


def test_the_derived_files_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.generate", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_check_names_a_stale_file_and_writing_fixes_it(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "kustomize" / "x.json"
    stale.parent.mkdir()
    stale.write_text("{}\n")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "outputs", lambda: {stale: '{"a": 1}\n', tmp_path / "new.yaml": "a: 1\n"})
    assert generate.main(["--check"]) == 1
    assert capsys.readouterr().err == "error: not up to date: kustomize/x.json, new.yaml; run make generate\n"
    assert stale.read_text() == "{}\n" and not (tmp_path / "new.yaml").exists()
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0 and stale.read_text() == '{"a": 1}\n'


def test_the_generated_yaml_is_what_yamllint_and_promtool_read():
    """Block style with `|` for every multi-line expression, sequences indented under their keys."""
    text = generate.SLO_RULES.read_text()
    assert "expr: |\n" in text and "\n  - name: " in text
    assert yaml.safe_load(text) == yaml.safe_load(generate.slo_rules())
