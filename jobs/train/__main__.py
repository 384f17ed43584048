"""`python -m jobs.train`: one candidate trained on the workers named by TF_CONFIG (jobs.train.train)."""

import sys

from jobs.core.cli import run
from jobs.train.train import main

if __name__ == "__main__":
    sys.exit(run(main))
