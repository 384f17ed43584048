"""TF_CONFIG as the Kubeflow training operator injects it, and the strategy it implies.

The operator sets, for a TFJob with more than one replica,

    {"cluster": {"worker": ["<job>-worker-0.<ns>.svc:2222", ...]},
     "task": {"type": "worker", "index": i}, "environment": "cloud"}

and sets nothing for a single replica. Worker 0 is the chief unless the cluster names one.
"""

from __future__ import annotations

import dataclasses
import json
import os

from jobs.common import JobError


@dataclasses.dataclass(frozen=True)
class Cluster:
    workers: int = 1
    task_type: str = "worker"
    task_index: int = 0
    has_chief: bool = False

    @property
    def distributed(self) -> bool:
        return self.workers > 1

    @property
    def is_chief(self) -> bool:
        if self.has_chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.task_index}"


def parse_tf_config(text: str | None) -> Cluster:
    """Reads TF_CONFIG; None or empty means one process, no cluster."""
    if not text or not text.strip():
        return Cluster()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobError(f"TF_CONFIG is not valid JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(config, dict):
        raise JobError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise JobError("TF_CONFIG has no 'cluster' object listing the workers' addresses")
    if not isinstance(task, dict):
        raise JobError("TF_CONFIG has no 'task' object with 'type' and 'index'")
    for role, addresses in cluster.items():
        if role not in ("chief", "worker"):
            raise JobError(f"TF_CONFIG cluster role {role!r} is not supported (only chief and worker)")
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and ":" in a for a in addresses)
        ):
            raise JobError(f"TF_CONFIG cluster.{role} must be a non-empty list of 'host:port' strings")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise JobError(f"TF_CONFIG task.type {task_type!r} is not a role in its cluster ({', '.join(cluster)})")
    if (
        not isinstance(task_index, int)
        or isinstance(task_index, bool)
        or not (0 <= task_index < len(cluster[task_type]))
    ):
        raise JobError(
            f"TF_CONFIG task.index {task_index!r} is out of range for {len(cluster[task_type])} {task_type}(s)"
        )
    return Cluster(
        workers=sum(len(addresses) for addresses in cluster.values()),
        task_type=task_type,
        task_index=task_index,
        has_chief="chief" in cluster,
    )


def tf_config(addresses: list[str], index: int) -> str:
    """TF_CONFIG for worker `index`, built the way the training operator builds it."""
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}, "environment": "cloud"}
    )


def strategy(cluster: Cluster, timeout_seconds: float):
    """MultiWorkerMirroredStrategy for a cluster, else the default strategy.

    Must run before any other TensorFlow op ("collective ops must be configured at program
    startup"). The timeout makes a collective fail when a peer is lost instead of hanging.
    """
    import tensorflow as tf

    if not cluster.distributed:
        return tf.distribute.get_strategy()
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=timeout_seconds or None,
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def current() -> Cluster:
    return parse_tf_config(os.environ.get("TF_CONFIG"))
