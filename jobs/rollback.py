"""`python -m jobs.rollback`: serve an earlier version again (jobs.release.rollback)."""

import sys

from jobs.core.cli import run
from jobs.release.rollback import main

if __name__ == "__main__":
    sys.exit(run(main))
