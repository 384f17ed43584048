"""`python -m jobs.ingest`: write a dataset once, with its validation split (jobs.ingest.ingest)."""

import sys

from jobs.core.cli import run
from jobs.ingest.ingest import main

if __name__ == "__main__":
    sys.exit(run(main))
