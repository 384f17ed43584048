"""`python -m jobs.evaluate`: score the candidates on the validation and test splits (jobs.evaluate.evaluate)."""

import sys

from jobs.core.cli import run
from jobs.evaluate.evaluate import main

if __name__ == "__main__":
    sys.exit(run(main))
