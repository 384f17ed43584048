"""The Kubeflow training operator v1.9.4's bookkeeping of a TFJob with Worker replicas only
(no Chief, no PS), written down from its source so that tests can produce the status objects
an Argo resource template polls. Files and lines at tag v1.9.4:

- pkg/controller.v1/common/job.go L120-140: a finished job (Succeeded or Failed condition) only
  has its pods cleaned up (cleanPodPolicy), and a succeeded one its active count moved to
  succeeded; its conditions never change again.
- job.go L176-218: backoffLimit — `pastBackoffLimit` sums the container restart counts of
  Running pods whose replica restartPolicy is OnFailure, Always or ExitCode (pkg/core/job.go
  L95-133); an ExitCode restart deletes and recreates the pod, so its count stays 0.
  `exceedsBackoffLimit` also needs requeues of the job key after errors (modelled: none).
  Then, or past activeDeadlineSeconds, the Failed condition is set, the pods are deleted as
  cleanPodPolicy says, and the status is written without recounting the replicas.
- pkg/controller.v1/common/pod.go L269-380 ReconcilePods: the replica counts start from zero
  every reconcile (initializeReplicaStatuses); a missing pod is created; the exit code is read
  from the container named `tensorflow` only; a Failed pod is deleted and the job marked
  Restarting when restartPolicy is OnFailure/Always, or ExitCode with a code >= 128
  (pkg/util/train/train_util.go L24); ExitCode with a code < 128 marks the job Failed; in the
  same pass the pod is still counted by phase (tensorflow/util.go L109-118: Running -> active,
  Succeeded -> succeeded, Failed -> failed). So `failed` is 1 for one reconcile during a
  normal restart.
- pkg/core/pod.go L81-88: ExitCode gives the pods restartPolicy Never (the kubelet never
  restarts them in place); OnFailure gives OnFailure (the kubelet does, the pod stays Running).
- pkg/controller.v1/tensorflow/tfjob_controller.go L373-519 UpdateJobStatus: with no chief,
  Succeeded when every worker succeeded (successPolicy AllWorkers), else Running while any is
  active; if any failed, Restarting again when ReconcilePods set it, else Failed.
- pkg/util/status.go L101-150 setCondition/filterOutCondition: one condition per type;
  Running and Restarting replace each other; Succeeded/Failed are appended last and turn
  Running to False; nothing changes once Failed. TFJob creation sets Created first
  (tfjob_controller.go L652-661).
- pkg/apis/kubeflow.org/v1/common_types.go L76-93: the counts are `omitempty` (0 is absent).
- job.go L146-166: a job that has not finished and has runPolicy.suspend deletes its pods
  through CleanUpResources -> DeletePodsAndServices (L43-69), which skips pods only for a
  finished job (so: every pod), sets active to 0, Running to False and adds Suspended. A
  finished job never gets there (L122): a suspend changes nothing about it.
"""

from __future__ import annotations

import copy
import dataclasses


@dataclasses.dataclass
class Pod:
    index: int
    phase: str = "Pending"  # Pending, Running, Succeeded, Failed
    exit_code: int | None = None
    restarts: int = 0  # container restarts in place (OnFailure)


@dataclasses.dataclass
class TFJob:
    replicas: int
    restart_policy: str  # ExitCode, OnFailure, Never
    backoff_limit: int | None = 3
    active_deadline: int | None = 14400
    clean_pod_policy: str = "Running"
    conditions: list[dict] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    start_time: int | None = None
    completion_time: int | None = None
    pods: dict[int, Pod] = dataclasses.field(default_factory=dict)
    deleted: bool = False
    suspend: bool = False  # spec.runPolicy.suspend

    def __post_init__(self):
        self.set_condition("Created", "True", "TFJobCreated")

    # pkg/util/status.go
    def is_(self, kind: str) -> bool:
        return any(c["type"] == kind and c["status"] == "True" for c in self.conditions)

    def set_condition(self, kind: str, status: str, reason: str) -> None:
        if self.is_("Failed"):
            return
        current = next((c for c in self.conditions if c["type"] == kind), None)
        if current is not None and current["status"] == status and current["reason"] == reason:
            return
        kept = []
        for c in self.conditions:
            if {kind, c["type"]} == {"Running", "Restarting"} or c["type"] == kind:
                continue
            if kind in ("Failed", "Succeeded") and c["type"] == "Running":
                c = {**c, "status": "False"}
            kept.append(c)
        self.conditions = [*kept, {"type": kind, "status": status, "reason": reason}]

    # pkg/controller.v1/common/job.go ReconcileJobs
    def reconcile(self, now: int) -> None:
        if self.is_("Succeeded") or self.is_("Failed"):
            self.clean_up()
            if self.is_("Succeeded"):
                self.counts["succeeded"] = self.counts.get("succeeded", 0) + self.counts.pop("active", 0)
            return
        if self.suspend:
            self.pods.clear()
            self.counts["active"] = 0
            if self.is_("Running"):
                self.set_condition("Running", "False", "TFJobSuspended")
            if not self.is_("Suspended"):
                self.set_condition("Suspended", "True", "TFJobSuspended")
            return
        if self.start_time is None:
            self.start_time = now
        restarted = sum(p.restarts for p in self.pods.values() if p.phase == "Running")
        past_backoff = self.backoff_limit is not None and (
            restarted > 0 if self.backoff_limit == 0 else restarted >= self.backoff_limit
        )
        past_deadline = self.active_deadline is not None and now - self.start_time >= self.active_deadline
        if past_backoff or past_deadline:
            self.completion_time = self.completion_time or now
            self.set_condition("Failed", "True", "TFJobFailed")
            self.clean_up()
            return
        self.reconcile_pods()
        self.update_status(now)

    def clean_up(self) -> None:
        for index, pod in list(self.pods.items()):
            if self.clean_pod_policy == "All" or (
                self.clean_pod_policy == "Running" and pod.phase in ("Running", "Pending")
            ):
                del self.pods[index]

    def reconcile_pods(self) -> None:
        counts = {"active": 0, "succeeded": 0, "failed": 0}
        for index in range(self.replicas):
            pod = self.pods.get(index)
            if pod is None:
                self.pods[index] = Pod(index)
                continue
            if pod.phase == "Failed":
                retryable = self.restart_policy in ("OnFailure", "Always") or (
                    self.restart_policy == "ExitCode" and (pod.exit_code or 0) >= 128
                )
                if retryable:
                    del self.pods[index]
                    self.set_condition("Restarting", "True", "TFJobRestarting")
                elif self.restart_policy == "ExitCode":
                    self.set_condition("Failed", "True", "TFJobFailed")
            key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(pod.phase)
            if key:
                counts[key] += 1
        self.counts = counts

    def update_status(self, now: int) -> None:
        restarting = any(c["type"] == "Restarting" for c in self.conditions)
        expected = self.replicas - self.counts["succeeded"]
        if expected == 0:
            self.completion_time = self.completion_time or now
            self.set_condition("Succeeded", "True", "TFJobSucceeded")
        elif self.counts["active"] > 0:
            self.set_condition("Running", "True", "TFJobRunning")
        if self.counts["failed"] > 0:
            if restarting:
                self.set_condition("Restarting", "True", "TFJobRestarting")
            else:
                self.completion_time = self.completion_time or now
                self.set_condition("Failed", "True", "TFJobFailed")

    # What the kubelet does to a pod (pkg/core/pod.go SetRestartPolicy decides which).
    def run(self, index: int) -> None:
        if index in self.pods:
            self.pods[index].phase = "Running"

    def exit(self, index: int, code: int) -> None:
        pod = self.pods.get(index)
        if pod is None:
            return
        if code == 0:
            pod.phase, pod.exit_code = "Succeeded", 0
        elif self.restart_policy == "OnFailure":
            pod.restarts += 1  # restarted in place: the pod stays Running
            pod.phase = "Running"
        else:
            pod.phase, pod.exit_code = "Failed", code

    def as_json(self) -> dict:
        """The object the Argo executor GETs (zero counts omitted, as the API omits them)."""
        status: dict = {"conditions": copy.deepcopy(self.conditions)}
        workers = {k: v for k, v in self.counts.items() if v}
        status["replicaStatuses"] = {"Worker": workers}
        if self.start_time is not None:
            status["startTime"] = self.start_time
        if self.completion_time is not None:
            status["completionTime"] = self.completion_time
        return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "status": status}
