"""Put the latest benchmark results into docs/benchmarks.md, between its marker lines.

    python -m bench.report                 the newest full run in results/ into the docs
    python -m bench.report --check         exit 1 if the docs differ from what it would write

Only the lines between BEGIN and END are written: a line naming the results file, the
machine and load line, and the table. A quick or partial run is skipped unless named with
--results-file, so the docs always show a whole run at full sizes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import results
from bench.cli import SECTIONS
from jobs.core.cli import JobError, parser, run
from jobs.core.files import read_json

log = logging.getLogger("bench.report")

BEGIN = "<!-- BEGIN bench table: written by `make bench-docs` from the latest results file; do not edit -->"
END = "<!-- END bench table -->"
DOCS = results.ROOT / "docs" / "benchmarks.md"


def source_line(name: str, report: dict) -> str:
    commit = report["versions"].get("commit") or "unknown"
    return f"From `{name}`, measured by `make bench` at commit {commit}; regenerate with `make bench-docs`."


def block(name: str, report: dict) -> str:
    """The generated lines, markers included."""
    return "\n".join([BEGIN, source_line(name, report), "", results.render(report), "", END])


def replace_block(text: str, new: str) -> str:
    """`text` with the lines from BEGIN to END (inclusive) replaced by `new`."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise JobError(f"expected one {BEGIN!r} line and one {END!r} line after it")
    kept = lines[: starts[0]] + new.splitlines() + lines[ends[0] + 1 :]
    return "\n".join(kept) + ("\n" if text.endswith("\n") else "")


def current_block(text: str) -> str:
    """The lines from BEGIN to END as they are in `text`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
    end = next(i for i, line in enumerate(lines) if line.strip() == END)
    return "\n".join(lines[start : end + 1])


def is_full_run(report: dict) -> bool:
    return not report["settings"].get("quick") and set(report["settings"].get("sections", ())) >= set(SECTIONS)


def latest_full(out: Path) -> Path:
    for path in sorted(out.glob("bench-*.json"), reverse=True):
        if is_full_run(read_json(path)):
            return path
        log.info("skipping %s: a quick or partial run", path.name)
    raise JobError(f"no full benchmark run in {out}/ (make bench writes one; or name one with --results-file)")


def build_parser():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"), help="where make bench wrote its results")
    p.add_argument("--results-file", type=Path, help="this results file instead of the newest full run")
    p.add_argument("--docs", type=Path, default=DOCS, help="the markdown file with the marker lines")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the docs are not up to date")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.results_file or latest_full(args.results)
    text = args.docs.read_text()
    updated = replace_block(text, block(path.name, read_json(path)))
    if args.check:
        if updated != text:
            raise JobError(f"{args.docs} does not show {path} (run make bench-docs)")
        log.info("%s shows %s", args.docs, path)
        return 0
    args.docs.write_text(updated)
    log.info("%s now shows %s", args.docs, path)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
