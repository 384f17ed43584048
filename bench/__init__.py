"""Benchmarks of the Fashion-MNIST system, beside the pipeline rather than part of it.

    python -m bench --help           the command line (bench.cli)
    python -m bench.worker --help    the step split's MWMS worker, started by bench.training
    python -m bench.report --help    docs/benchmarks.md's table from the latest results file
    python -m bench.profile --help   the local server under py-spy: its flame graph and the
                                     request path's split per stage

One module per section (training, pipeline, serving, e2e, accuracy), the figures and results
file in bench.results, the child processes in bench.processes, the HTTP client in bench.client.
The harness uses the pipeline's public pieces (jobs.*) and is not in the jobs image.
"""

import jobs  # noqa: F401  (sets TF_USE_LEGACY_KERAS and friends before TensorFlow is imported)
