"""`python -m jobs.canary`: watch a canary, then promote it or roll it back (jobs.release.canary)."""

import sys

from jobs.core.cli import run
from jobs.release.canary import main

if __name__ == "__main__":
    sys.exit(run(main))
