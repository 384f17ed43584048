"""`python -m jobs.predict`: classify images through a model server, or wait for a version (jobs.predict.predict)."""

import sys

from jobs.core.cli import run
from jobs.predict.predict import main

if __name__ == "__main__":
    sys.exit(run(main))
