"""TF_CONFIG as the Kubeflow training operator injects it, the strategy it implies, and how a
worker that lost its peers exits.

The operator sets, for a TFJob with more than one replica,

    {"cluster": {"worker": ["<job>-worker-0.<ns>.svc:2222", ...]},
     "task": {"type": "worker", "index": i}, "environment": "cloud"}

and sets nothing for a single replica. Worker 0 is the chief unless the cluster names one.
"""

from __future__ import annotations

import dataclasses
import json
import os

from jobs.core.cli import JobError

# The exit status of a worker that lost a peer, or whose peers never joined: a transient fault,
# worth a restart. EX_TEMPFAIL (75, "temporary failure, try again" in sysexits.h) moved into
# 128-255, the statuses that a TFJob with `restartPolicy: ExitCode` retries; 1-127 (a bad flag,
# a missing dataset, a bug) fail the job for good. jobs.local applies the same rule.
EXIT_PEER_LOST = 128 + 75  # 203

# Seconds without a heartbeat after which TensorFlow's coordination service declares a worker
# lost and aborts every worker's collectives (its own default, made explicit). Heartbeats come from
# a C++ thread every half of this, whatever Python is doing.
HEARTBEAT_TIMEOUT = 10.0
# Seconds the workers wait for all of them to join the cluster at start-up before giving up
# (TensorFlow's own limit is an hour): an image pull or a busy node fits in it.
START_TIMEOUT = 600.0


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
        if role == "chief" and len(addresses) != 1:
            raise JobError("TF_CONFIG cluster.chief must list exactly one address")
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


def retryable(returncode: int) -> bool:
    """Whether a worker that ended with `returncode` (as subprocess reports it) is restarted
    under `restartPolicy: ExitCode`: exit 128-255, or killed by a signal (Popen's -N, a
    container's 128+N)."""
    return returncode < 0 or returncode >= 128


def transient(err) -> bool:
    """Whether a TensorFlow error is a lost peer or an aborted collective (worth a restart)
    rather than this worker's own: gRPC's retryable codes, which is how TensorFlow reports a
    peer that stopped sending heartbeats, a heartbeat that timed out, or a cluster that did not
    form in time."""
    import tensorflow as tf

    return err.error_code in (
        tf.errors.UNAVAILABLE,
        tf.errors.DEADLINE_EXCEEDED,
        tf.errors.ABORTED,
        tf.errors.CANCELLED,
    )


def strategy(cluster: Cluster, heartbeat_timeout: float = HEARTBEAT_TIMEOUT, start_timeout: float = START_TIMEOUT):
    """MultiWorkerMirroredStrategy for a cluster, else the default strategy.

    Must run before any other TensorFlow op ("collective ops must be configured at program
    startup"). There is no per-collective timeout: TensorFlow enforces one with a thread that
    sleeps for the whole timeout, one per collective, thousands a second. A lost or frozen peer
    is detected by the coordination service's heartbeats instead (see `coordination`).
    """
    import tensorflow as tf

    if not cluster.distributed:
        return tf.distribute.get_strategy()
    coordination(cluster, heartbeat_timeout, start_timeout)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def coordination(cluster: Cluster, heartbeat_timeout: float, start_timeout: float) -> None:
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy would (leader:
    the chief, or worker 0; every worker coordinated), with our timeouts; the strategy keeps a
    configuration it finds. Registration is a barrier with `start_timeout`, so that a worker
    whose peers never start fails on both sides: without it the leader waits at a later barrier
    that has a fixed one-hour timeout."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    jobs = {"chief": 1, "worker": cluster.workers - 1} if cluster.has_chief else {"worker": cluster.workers}
    leader = "chief" if cluster.has_chief else "worker"
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader}/replica:0/task:0",
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=name, num_tasks=count) for name, count in jobs.items() if count
        ],
        heartbeat_timeout_in_ms=int(heartbeat_timeout * 1000),
        cluster_register_timeout_in_ms=int(start_timeout * 1000),
    )
    # Not among configure_coordination_service's arguments; the config it returns is the one used.
    context.context().coordination_service.cluster_register_with_barrier = True


def current() -> Cluster:
    return parse_tf_config(os.environ.get("TF_CONFIG"))
