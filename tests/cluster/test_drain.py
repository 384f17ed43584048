"""`kubectl drain` of a node with TF Serving's pods, as the eviction API decides it, with the
rendered PodDisruptionBudget: a drain must finish while no server is ready (before the first
promotion, or after a version failed to load), and must keep one ready server while one is.

The eviction API's rule for a pod guarded by a budget (Kubernetes 1.35,
`pkg/registry/core/pod/storage/eviction.go`, and the field's documentation in
`staging/src/k8s.io/api/policy/v1/types.go`): a pod that is not Running (Pending, Succeeded,
Failed) is evicted regardless of the budget; a Running pod that is not Ready is evicted at
once under `unhealthyPodEvictionPolicy: AlwaysAllow`, and under `IfHealthyBudget` (the
default when the field is absent) only while status.currentHealthy >= status.desiredHealthy;
any other pod only while status.disruptionsAllowed (currentHealthy - desiredHealthy) > 0,
else 429 Too Many Requests, which `kubectl drain` retries until its timeout (none by default).
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.cluster import render


@dataclasses.dataclass
class Pod:
    name: str
    node: str
    ready: bool
    phase: str = "Running"


def evictable(pod: Pod, pods: list[Pod], min_available: int, policy: str) -> bool:
    if pod.phase != "Running":
        return True
    healthy = sum(p.ready and p.phase == "Running" for p in pods)
    if not pod.ready:
        if policy == "AlwaysAllow":
            return True
        if healthy >= min_available:
            return True
    return healthy - min_available > 0


def drain(node: str, pods: list[Pod], min_available: int, policy: str, loads: bool, rounds: int = 20) -> list[Pod]:
    """Evicts every pod on `node`, retrying refused ones; an evicted pod is replaced on another
    node, unready until it has loaded the model (`loads`: a promoted version exists, and it is
    ready a round later). Returns the pods still on `node`."""
    pods = list(pods)
    for _ in range(rounds):
        for p in pods:
            p.ready = p.ready or (loads and p.node != node)
        left = [p for p in pods if p.node == node]
        if not left:
            break
        for pod in left:
            if evictable(pod, pods, min_available, policy):
                pods.remove(pod)
                pods.append(Pod(pod.name + "-new", "other", ready=False))
    return [p for p in pods if p.node == node]


def budget(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "tf-serving")


@pytest.mark.parametrize("overlay", render.OVERLAYS)
def test_a_drain_finishes_while_no_server_is_ready(rendered, overlay):
    spec = budget(rendered[f"overlays/{overlay}"])["spec"]
    policy = spec.get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    unready = [Pod("tf-serving-a", "node-1", ready=False), Pod("tf-serving-b", "node-1", ready=False)]
    # Nothing promoted yet: no server gets ready, before or after the drain.
    assert drain("node-1", unready, spec["minAvailable"], policy, loads=False) == [], (
        f"{policy}: the drain waits forever for servers that cannot get ready"
    )
    # The default policy would leave both (kubectl retries the 429s without end).
    assert len(drain("node-1", unready, spec["minAvailable"], "IfHealthyBudget", loads=False)) == 2


@pytest.mark.parametrize("overlay", render.OVERLAYS)
def test_a_drain_keeps_one_ready_server_while_there_is_one(rendered, overlay):
    spec = budget(rendered[f"overlays/{overlay}"])["spec"]
    policy = spec.get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    servers = [Pod("tf-serving-a", "node-1", ready=True), Pod("tf-serving-b", "node-1", ready=True)]
    pods = list(servers)
    first = [p for p in pods if evictable(p, pods, spec["minAvailable"], policy)]
    assert first == servers, "two ready servers: either may go"
    pods.remove(servers[0])
    assert not evictable(servers[1], pods, spec["minAvailable"], policy), "the last ready one waits"
    pods.append(Pod("tf-serving-c", "other", ready=True))  # its replacement has loaded the model
    assert evictable(servers[1], pods, spec["minAvailable"], policy)
    assert drain("node-1", servers, spec["minAvailable"], policy, loads=True) == []


def test_pods_that_are_not_running_ignore_the_budget():
    pending = Pod("p", "node-1", ready=False, phase="Pending")
    assert evictable(pending, [pending], 1, "IfHealthyBudget")
