"""`python -m jobs.promote`: promote the best candidate if it is better beyond noise (jobs.release.promote)."""

import sys

from jobs.core.cli import run
from jobs.release.promote import main

if __name__ == "__main__":
    sys.exit(run(main))
