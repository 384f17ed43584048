"""What the tests share besides fixtures (those are in tests/conftest.py):

ROOT    the repository's root, defined once here
jobs    running a job as a user would, its one-line errors, encoded images, the Makefile's
        knobs, a copy of the checkout as a reader has it
faults  waiting with a bound, process trees, a restartable MLflow server (the fault tests)
docs    the shell commands of README.md and docs/*.md, and a terminal to paste them into
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
