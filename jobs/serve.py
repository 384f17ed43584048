"""`python -m jobs.serve`: the local model server with TF Serving's REST API.

The server itself is the package `jobs.serving` (one module per concern); this is its entry
point, kept under the name that `jobs.local`, `make serve` and the arm64 serving component run.
"""

from __future__ import annotations

import sys

from jobs.core.cli import run
from jobs.serving.cli import main

if __name__ == "__main__":
    sys.exit(run(main))
