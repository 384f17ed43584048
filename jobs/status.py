"""`python -m jobs.status`: one screen of the local runs and the served version (jobs.local.status)."""

import sys

from jobs.core.cli import run
from jobs.local.status import main

if __name__ == "__main__":
    sys.exit(run(main))
