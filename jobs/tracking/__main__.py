"""`python -m jobs.tracking`: create the local MLflow store in a work dir (jobs.tracking.tracker)."""

import sys

from jobs.core.cli import run
from jobs.tracking.tracker import main

if __name__ == "__main__":
    sys.exit(run(main))
