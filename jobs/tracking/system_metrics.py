"""CPU, memory, disk and network of each training worker, in its candidate's run, by MLflow's
own system metrics monitor (`mlflow.system_metrics`): a thread that samples psutil every
`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (MLflow's default 10) and logs the averages
as `system/<worker>/...` metrics (`system/...` with one worker), until the run ends.

On by default, here and in the cluster; `MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false` turns it
off. Like all tracking it is best effort: a monitor that cannot start or log gives up quietly.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("jobs.tracking")

SWITCH = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"  # MLflow's own variable; only "false" is read here


def enabled() -> bool:
    return os.environ.get(SWITCH, "true").strip().lower() not in ("false", "0", "no")


class Monitor:
    """MLflow's monitor for one worker, started once the run is known: at once for the chief,
    which created it; for the other workers when `run_id()` first names it (the chief records it
    in the candidate's run.json), asked every second for at most `wait` seconds."""

    def __init__(self, uri: str, run_id: Callable[[], str | None], node: str | None, wait: float = 300.0):
        self._monitor = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not uri or not enabled():
            return

        def start() -> None:
            waited = 0.0
            while (found := run_id()) is None:
                if waited >= wait or self._stop.wait(1.0):
                    return
                waited += 1.0
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                monitor = SystemMetricsMonitor(found, node_id=node, resume_logging=True, tracking_uri=uri)
                if not self._stop.is_set():
                    monitor.start()
                    self._monitor = monitor
            except Exception as err:  # best effort, as all tracking
                log.warning("tracking: system metrics are off (%s: %s)", type(err).__name__, err)

        self._thread = threading.Thread(target=start, name="system-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops sampling and logs what is left (before the run ends)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
