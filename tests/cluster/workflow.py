"""Reading workflows/e2e.yaml the way Argo does: parameters, the DAG, and the TFJob manifests
embedded as strings in its resource templates, with `{{...}}` expressions either kept (for the
parity checks) or replaced by sample values (for schema validation and local runs)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from jobs import steps
from tests.helpers import ROOT

WORKFLOW = ROOT / "workflows" / "e2e.yaml"
ROLLBACK = ROOT / "workflows" / "rollback.yaml"  # make rollback WHERE=cluster
EXPR = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
TOKEN = re.compile(r"ARGOEXPR\d{4}X")

# What every parameter of jobs/steps.py is in the workflow, as an Argo expression.
STEP_PARAMETERS = {
    "run_id": "{{workflow.name}}",
    "dataset": "{{workflow.parameters.dataset}}",
    "epochs": "{{workflow.parameters.epochs}}",
    "patience": "{{workflow.parameters.patience}}",
    "model": "{{inputs.parameters.model}}",
    "models": "{{workflow.parameters.models}}",
    "url": "{{workflow.parameters.serving-url}}",
    "min_accuracy": "{{workflow.parameters.min-accuracy}}",
    "rollout": "{{workflow.parameters.rollout}}",
    "stable_url": "{{workflow.parameters.stable-url}}",
    "canary_url": "{{workflow.parameters.canary-url}}",
    # canary_seconds -> canary-seconds, and so on
    **{name: "{{workflow.parameters." + name.replace("_", "-") + "}}" for name in steps.CANARY_KNOBS},
}
WORK_VOLUME = "work"


def load(path: Path = WORKFLOW) -> dict:
    return yaml.safe_load(path.read_text())


def templates(wf: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


def dag_tasks(wf: dict) -> list[dict]:
    return templates(wf)[wf["spec"]["entrypoint"]]["dag"]["tasks"]


def depends_on(task: dict) -> set[str]:
    """Task names in a `depends:` expression of plain names joined by &&."""
    expr = task.get("depends", "")
    return {name.strip() for name in expr.split("&&") if name.strip()}


def dag_order(wf: dict) -> list[dict]:
    """The DAG's tasks in an order that respects `depends` (a topological sort)."""
    pending = {t["name"]: t for t in dag_tasks(wf)}
    done: list[dict] = []
    while pending:
        ready = [t for t in pending.values() if depends_on(t) <= {d["name"] for d in done}]
        if not ready:
            raise AssertionError(f"the DAG has a cycle or an unknown dependency among {sorted(pending)}")
        for t in ready:
            done.append(pending.pop(t["name"]))
    return done


def parameter_defaults(wf: dict) -> dict[str, str | None]:
    """Each workflow parameter's default: its value, else valueFrom.default, else None."""
    out = {}
    for p in wf["spec"]["arguments"]["parameters"]:
        out[p["name"]] = p.get("value", (p.get("valueFrom") or {}).get("default"))
    return out


def tokenize(text: str) -> tuple[str, dict[str, str]]:
    """Replaces each `{{expr}}` by a plain token so the text parses as YAML; returns the map."""
    found: dict[str, str] = {}

    def sub(m: re.Match) -> str:
        token = f"ARGOEXPR{len(found):04d}X"
        found[token] = "{{" + m[1] + "}}"
        return token

    return EXPR.sub(sub, text), found


def untokenize(value, tokens: dict[str, str]):
    if isinstance(value, str):
        return TOKEN.sub(lambda m: tokens[m[0]], value)
    if isinstance(value, list):
        return [untokenize(v, tokens) for v in value]
    if isinstance(value, dict):
        return {k: untokenize(v, tokens) for k, v in value.items()}
    return value


def manifest_with_expressions(template: dict) -> dict:
    """A resource template's manifest parsed, `{{...}}` kept as strings."""
    text, tokens = tokenize(template["resource"]["manifest"])
    return untokenize(yaml.safe_load(text), tokens)


def substitute(text: str, values: dict[str, str]) -> str:
    """Argo's substitution: every `{{name}}` replaced by values[name] (all must be known)."""

    def sub(m: re.Match) -> str:
        if m[1] not in values:
            raise KeyError(f"no sample value for {{{{{m[1]}}}}}")
        return values[m[1]]

    return EXPR.sub(sub, text)


def sample_values(wf: dict, overrides: dict[str, str] | None = None, model: str = "cnn") -> dict[str, str]:
    """Values for every expression the workflow uses, as a run would see them."""
    params = {k: v for k, v in parameter_defaults(wf).items()}
    params.setdefault("image", None)
    if params["image"] is None:
        params["image"] = "fmnist-jobs:0123456789ab"
    params.update(overrides or {})
    values = {f"workflow.parameters.{k}": str(v) for k, v in params.items()}
    values.update({"workflow.name": "fmnist-e2e-x7k2p", "inputs.parameters.model": model, "item": model})
    return values


def embedded_manifests(wf: dict, values: dict[str, str], action: str = "create") -> list[tuple[str, dict]]:
    """(template name, parsed object) for every resource template's manifest with this action
    (create: the objects the workflow creates; patch: the changes it makes), substituted."""
    out = []
    for name, t in templates(wf).items():
        if "resource" in t and t["resource"]["action"] == action:
            out.append((name, yaml.safe_load(substitute(t["resource"]["manifest"], values))))
    return out


def substitute_obj(value, values: dict[str, str]):
    if isinstance(value, str):
        return substitute(value, values)
    if isinstance(value, list):
        return [substitute_obj(v, values) for v in value]
    if isinstance(value, dict):
        return {k: substitute_obj(v, values) for k, v in value.items()}
    return value


def workflow_substituted(wf: dict, values: dict[str, str]) -> dict:
    """The workflow with every expression outside the DAG's withParam replaced (for a schema
    check of field types, e.g. an int-or-string that only an expression fills)."""
    text = json.dumps(wf)

    def sub(m: re.Match) -> str:
        # Like Argo: the value goes into the JSON text escaped as a string's content.
        return json.dumps(values[m[1]])[1:-1] if m[1] in values else m[0]

    return json.loads(EXPR.sub(sub, text))


def cpu_limit_threads(resources: dict) -> str:
    """What a resourceFieldRef on limits.cpu with divisor 1 yields: the limit rounded up."""
    cpu = str(resources["limits"]["cpu"])
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return str(max(1, math.ceil(cores)))
