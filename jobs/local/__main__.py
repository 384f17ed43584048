"""`python -m jobs.local`: the whole pipeline on this machine (jobs.local.runner)."""

import sys

from jobs.core.cli import run
from jobs.local.runner import main

if __name__ == "__main__":
    sys.exit(run(main))
