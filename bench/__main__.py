"""`python -m bench`: the command line in bench.cli."""

import sys

from bench import cli
from jobs.core.cli import run

if __name__ == "__main__":
    sys.exit(run(cli.main))
