"""The names jobs/bench.py still imports from here, until it moves to bench/: the homes are
jobs/cli.py (command lines), jobs/cpus.py (CPUs, memory, threads) and jobs/files.py (atomic
writes, JSON). Nothing else imports this module (tests/test_layout.py)."""

from jobs.cli import JobError, csv_list, parser, positive_int, run
from jobs.cpus import configure_threads, cpu_count
from jobs.files import write_json

__all__ = ["JobError", "configure_threads", "cpu_count", "csv_list", "parser", "positive_int", "run", "write_json"]
