"""`make generate` writes the files derived from their owners; `make verify` (hack/generate.sh
verify, which `make test` runs) fails, naming them, when one is out of date.

    workflows/e2e.yaml   every step's command and arguments (jobs/steps.py) and the defaults of
                         the parameters they use (the jobs' parsers, jobs/steps.py): edited in
                         place, round-trip, so its comments, drawing and layout stay
    hack/knobs.tsv       each Makefile knob's default and its owner (what `make help` prints)
    README.md            the knob table, the map of the tree (one line per package, from each
                         package's docstring) and the test count, between marker comments
    docs/layout.md       every package's modules (their docstrings) and the import layers

Usage: python hack/generate.py [--check]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString  # noqa: E402

from jobs import steps  # noqa: E402
from jobs.core.cli import duration  # noqa: E402
from jobs.ingest import data  # noqa: E402
from jobs.local import settings  # noqa: E402

WORKFLOW = ROOT / "workflows" / "e2e.yaml"
KNOBS_TSV = ROOT / "hack" / "knobs.tsv"
README = ROOT / "README.md"
LAYOUT = ROOT / "docs" / "layout.md"


# -- workflows/e2e.yaml -----------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _scalar(value: str):
    """As the workflow writes it: an Argo expression or what would read as a number quoted."""
    if "{{" in value or re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?", value):
        return DoubleQuotedScalarString(value)
    return value


def _replace(seq, values: list[str]) -> None:
    """A sequence's items replaced in place (its flow or block style stays)."""
    seq.clear()
    seq.extend(_scalar(v) for v in values)


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(_item(v) for v in values) + "]"


def _item(value: str) -> str:
    return f'"{value}"' if "{{" in value else value


# yamllint's line-length (.yamllint) less a margin: a longer flow list is wrapped.
FLOW_WIDTH = 200


def _flow_lines(key: str, values: list[str], indent: str) -> str:
    """`key: [values]` on one line, or, when longer than FLOW_WIDTH, wrapped after each
    `--flag, value` pair with the continuation lines aligned under the first value."""
    line = f"{key}: {_flow(values)}"
    if len(indent + line) <= FLOW_WIDTH:
        return indent + line
    pairs, rest = [], list(values)
    while rest:
        take = 2 if rest[0].startswith("--") and len(rest) > 1 and not rest[1].startswith("--") else 1
        pairs.append(", ".join(_item(v) for v in rest[:take]))
        rest = rest[take:]
    joint = ",\n" + indent + " " * (len(key) + 3)
    return f"{indent}{key}: [" + joint.join(pairs) + "]"


def _dump(yaml: YAML, data) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _carry(text: str, before: str, after: str) -> str:
    """`text` with the edits that turn `before` (its round trip) into `after`, so that what the
    round trip itself rewrites (a sequence of sequences, `- - name:`, which ruamel.yaml indents
    its own way) stays as written. An edit in a part the round trip rewrote is an error."""
    original, base, new = (t.splitlines(keepends=True) for t in (text, before, after))
    where = {}  # a line of the round trip -> the same line in the text
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, base, original, autojunk=False).get_opcodes():
        if tag == "equal":
            where.update((i, j1 + i - i1) for i in range(i1, i2))
    out = list(original)
    for tag, i1, i2, j1, j2 in reversed(difflib.SequenceMatcher(None, base, new, autojunk=False).get_opcodes()):
        if tag == "equal":
            continue
        # The lines replaced (none: an insertion, before line i1 or after the last line).
        kept = [where.get(i) for i in range(i1, i2)] or [where.get(i1, where.get(i1 - 1, -2) + 1)]
        if None in kept or -1 in kept or kept != list(range(kept[0], kept[0] + len(kept))):
            raise SystemExit(f"error: cannot place an edit of {WORKFLOW.name} at line {i1 + 1}: edit it by hand")
        start = kept[0]
        out[start : start + (i2 - i1)] = new[j1:j2]
    return "".join(out)


def workflow(text: str) -> str:
    yaml = _yaml()
    wf = yaml.load(text)
    before = _dump(yaml, wf)
    defaults = steps.defaults()
    for parameter in wf["spec"]["arguments"]["parameters"]:
        name = parameter["name"].replace("-", "_")
        if name not in defaults:
            continue
        if "valueFrom" in parameter:
            parameter["valueFrom"]["default"] = defaults[name]
        else:
            parameter["value"] = _scalar(defaults[name])
        if name == "dataset":
            _replace(parameter["enum"], list(data.SOURCES))
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    for step in steps.STEPS:
        command = step.command("python", **steps.ARGO)
        template = templates[step.name]
        if step.per_model:  # a TFJob: the command is inside the manifest's text
            manifest = str(template["resource"]["manifest"])
            for key, values in (("command", command[:3]), ("args", command[3:])):
                # A flow list, on one line or wrapped over several (`[^]]` spans the lines).
                manifest = re.sub(
                    rf"^(\s+){key}: \[[^]]*\]",
                    lambda m, key=key, values=values: _flow_lines(key, values, m[1]),
                    manifest,
                    count=1,
                    flags=re.M,
                )
            template["resource"]["manifest"] = LiteralScalarString(manifest)
        else:
            _replace(template["container"]["command"], command[:3])
            _replace(template["container"]["args"], command[3:])
    return _carry(text, before, _dump(yaml, wf))


# -- knobs ------------------------------------------------------------------------------------


def makefile_knobs(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """The Makefile's knobs, name: (its own value, what it is), from the `# knob:` line above
    each `NAME ?= value`."""
    knobs, what = {}, None
    for line in (root / "Makefile").read_text().splitlines():
        match = re.fullmatch(r"([A-Z_]+) *\?= *(.*)", line)
        if match and what is not None:
            knobs[match[1]] = (match[2].strip(), what)
        what = line.removeprefix("# knob: ") if line.startswith("# knob: ") else None
    return knobs


def local_knobs(root: Path = ROOT) -> list[str]:
    """The knobs hack/local.sh passes to jobs.local as flags (the Makefile's LOCAL_KNOBS)."""
    match = re.search(r"^LOCAL_KNOBS := (.*)$", (root / "Makefile").read_text(), re.M)
    return match[1].split()


def knob_defaults() -> dict[str, tuple[str, str]]:
    """name: (default, owner). A knob that jobs.local takes as a flag has the flag's default
    (jobs.local takes the pipeline's from jobs/steps.py); any other the Makefile's value."""
    parser = settings.build_parser()
    flags = {flag: action for action in parser._actions for flag in action.option_strings}
    out = {}
    for name, (value, _) in makefile_knobs().items():
        flag = "--" + name.lower().replace("_", "-")
        if name in local_knobs() and flag in flags:
            default = flags[flag].default
            default = ",".join(default) if isinstance(default, list | tuple) else default
            default = f"{default:g}" if isinstance(default, float) else str(default)
            out[name] = (default, f"python -m jobs.local {flag}")
        else:
            out[name] = (value, "Makefile" if value else "")
    return out


def knobs_tsv() -> str:
    lines = ["# Generated by make generate from the owners of the defaults (hack/generate.py): make help prints it."]
    lines += [f"{name}\t{default}\t{owner}" for name, (default, owner) in knob_defaults().items()]
    return "\n".join(lines) + "\n"


def knob_table() -> str:
    knobs = makefile_knobs()
    rows = ["| knob | default | meaning |", "| --- | --- | --- |"]
    for name, (default, _) in knob_defaults().items():
        if name not in local_knobs():
            continue
        shown = f"`{default}`" if default else ""
        rows.append(f"| `{name}` | {shown} | {knobs[name][1]} |")
    return "\n".join(rows)


# Variables a script may read that are not knobs: the shell's and the tools' own.
NOT_KNOBS = {"BASH_SOURCE", "HOME", "PATH", "PWD", "USER", "PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL"}
NOT_KNOBS |= {"MLFLOW_EXPERIMENT_NAME", "MLFLOW_DISABLE_TELEMETRY"}  # MLflow's own variables, read as MLflow does
NOT_KNOBS |= {"CI"}  # set by CI services (GitHub Actions: true)


def knob_problems(root: Path = ROOT) -> list[str]:
    """What is wrong with the knobs the Makefile's scripts read: one that the Makefile does not
    declare (nor export), a default of a make-owned knob that differs from the Makefile's, or a
    default of its own for a knob jobs.local's parser owns."""
    makefile = (root / "Makefile").read_text()
    knobs = makefile_knobs(root)
    exported = {name for line in makefile.splitlines() if line.startswith("export ") for name in line.split()[1:]}
    scripts = sorted({*re.findall(r"^\t+(hack/[\w-]+\.sh)", makefile, re.M), "hack/lib.sh"})
    problems = []
    for script in scripts:
        text = (root / script).read_text()
        if "source hack/lib.sh" in text:
            text = (root / "hack/lib.sh").read_text() + text
        assigned = set(re.findall(r"^\s*(?:local\s+)?([A-Z][A-Z0-9_]*)=(?!\$\{\1:-)", text, re.M))
        for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}", text):
            if name in NOT_KNOBS or (name in assigned and name not in knobs):
                continue
            if name not in knobs and name not in exported:
                problems.append(f"{script} reads {name}, which the Makefile does not declare")
            elif name in knobs and knobs[name][0] and default and default != knobs[name][0]:
                problems.append(f"{script} defaults {name} to {default!r}, the Makefile to {knobs[name][0]!r}")
            elif name in local_knobs(root) and not knobs[name][0] and default:
                problems.append(f"{script} defaults {name} to {default!r}: jobs.local's parser owns it")
    return sorted(set(problems))


# -- the map of the tree ----------------------------------------------------------------------


def packages() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "jobs").glob("*/__init__.py"))


def all_packages() -> list[Path]:
    """The stages' packages and the packages inside them."""
    return sorted(p.parent for p in (ROOT / "jobs").glob("*/**/__init__.py"))


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def summary(path: Path) -> str:
    """A docstring's first sentence, on one line."""
    text = " ".join(docstring(path).split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".")


def entries() -> list[Path]:
    return sorted(p for p in (ROOT / "jobs").glob("*.py") if p.name != "__init__.py")


def tree_map() -> str:
    """README's map of jobs/: a line per package and per module beside them."""
    lines = ["jobs/                 the Python jobs (python -m jobs.<name> --help), one package per stage"]
    for package in packages():
        lines.append(f"  {package.name + '/':<20}{summary(package / '__init__.py')}")
    for entry in entries():
        lines.append(f"  {entry.name:<20}{summary(entry)}")
    return "\n".join(lines)


def layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c["layers"] for c in config if c["type"] == "layers")


def layout() -> str:
    out = [
        "# The layout of jobs/",
        "",
        "Generated by `make generate` from each package's docstring (`hack/generate.py`); edit those,",
        "not this page. `make lint` checks the import contracts in `pyproject.toml`",
        "(`[tool.importlinter]`): a package imports only the layers below its own, siblings on one",
        "layer (`|`) import neither each other, and no package has an import cycle among its modules.",
        "",
        "## Layers, top to bottom",
        "",
        "```",
        *(f"jobs.{' | jobs.'.join(part.strip() for part in layer.split('|'))}" for layer in layers()),
        "```",
        "",
        "## Entry modules",
        "",
        "```",
        *(f"{entry.name:<12} {summary(entry)}" for entry in entries()),
        "```",
        "",
    ]
    for package in all_packages():
        name = package.relative_to(ROOT)
        out += [f"## {name}/", "", "```", docstring(package / "__init__.py"), "```", ""]
    return "\n".join(out)


# -- test counts ------------------------------------------------------------------------------


def test_counts() -> dict[str, int]:
    """How many tests pytest collects (no test runs), and how many of them are skipped on a
    machine like CI's without the upstream mirror or a cluster (tests/helpers/skips.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env={**os.environ, "FMNIST_SKIP_COUNTS": str(counts)},
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"^(\d+) tests? collected", proc.stdout, re.M)
        if match is None or not counts.exists():
            raise SystemExit(f"error: pytest --collect-only failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return json.loads(counts.read_text())


# -- README -----------------------------------------------------------------------------------


def between(text: str, name: str, content: str) -> str:
    """`content` between `<!-- name -->` and `<!-- /name -->` (for a fenced block: inside)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise SystemExit(f"error: README.md has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


END_TO_END = re.compile(
    r"^\| end to end: make local DATASET=synthetic, default settings \| (?P<median>[\d.]+) \| "
    r"(?P<low>[\d.]+) – (?P<high>[\d.]+) \| (?P<runs>\d+) \| s \|",
    re.M,
)


def end_to_end() -> str:
    """`make local DATASET=synthetic`'s time as `make bench` measured it last (the table that
    `make bench-docs` writes into docs/benchmarks.md)."""
    found = END_TO_END.search((ROOT / "docs" / "benchmarks.md").read_text())
    if found is None:
        raise SystemExit("error: docs/benchmarks.md has no end-to-end row in its bench table")
    low, high = round(float(found["low"])), round(float(found["high"]))
    return f"{duration(float(found['median']))} ({low}-{high} s over {found['runs']} runs of make bench)"


def readme(text: str) -> str:
    text = between(text, "knobs", knob_table())
    text = between(text, "map", "```\n" + tree_map() + "\n```")
    counts = test_counts()
    for name in ("tests", "manifests", "documented"):
        text = re.sub(rf"(<!-- {name} -->)\d+(<!-- /{name} -->)", rf"\g<1>{counts[name]}\g<2>", text)
    return re.sub(r"(<!-- e2e -->).*?(<!-- /e2e -->)", lambda m: f"{m[1]}{end_to_end()}{m[2]}", text, flags=re.S)


GENERATED: dict[Path, Callable[[str], str]] = {
    WORKFLOW: workflow,
    KNOBS_TSV: lambda _: knobs_tsv(),
    LAYOUT: lambda _: layout(),
    README: readme,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write (or --check) the derived files.")
    p.add_argument("--check", action="store_true", help="change nothing; fail if a file is out of date")
    args = p.parse_args(argv)
    stale = []
    for path, make in GENERATED.items():
        old = path.read_text() if path.exists() else ""
        new = make(old)
        if new == old:
            continue
        stale.append(path.relative_to(ROOT))
        if args.check:
            diff = difflib.unified_diff(old.splitlines(), new.splitlines(), str(path), "generated", lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            path.write_text(new)
            print(f">> wrote {path.relative_to(ROOT)}")
    problems = knob_problems() if args.check else []
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.check and stale:
        print(f"error: out of date: {', '.join(map(str, stale))}: run make generate", file=sys.stderr)
        return 1
    if problems:
        return 1
    if args.check:
        print(f">> verify passed: {', '.join(str(p.relative_to(ROOT)) for p in GENERATED)} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
