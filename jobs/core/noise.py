"""TensorFlow's start-up lines that say nothing to a person on a CPU-only machine, and a filter
that keeps them in a log only.

    python -m jobs.core.noise LOG    copies its input to LOG, and to stderr what is not noise

`make serve` and `make tensorboard` send their server's stderr through it; the local runner
shows its children's lines with the same test (jobs.local.processes). The filter reads until its
input ends, whatever signal the terminal sends: the server's last lines reach the person too.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Sequence

# The `tensorflow` wheel (pinned for tf-keras) probes CUDA at start-up and logs its failure as an
# error on every machine without a GPU; MLIR and absl say they are there; oneDNN and the CPU
# flags describe the build.
NOISE = re.compile(
    r"cuInit|cuda_platform|cudart_stub|Could not find cuda drivers|Sharding callback duration|"
    r"oneDNN custom operations|rebuild TensorFlow with the appropriate compiler flags|"
    r"This TensorFlow binary is optimized|mlir_graph_optimization_pass|before absl::InitializeLog|"
    r"unsupported characters which will be renamed"
)


def is_noise(line: str) -> bool:
    return NOISE.search(line) is not None


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m jobs.core.noise LOG", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the writer's end of the pipe decides when this ends
    with open(args[0], "a", encoding="utf-8", errors="replace") as log:
        for line in sys.stdin:
            log.write(line)
            log.flush()
            if not is_noise(line):
                sys.stderr.write(line)
                sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
