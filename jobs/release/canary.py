"""Watch a canary, then promote it to stable or roll it back: the pipeline's last step.

With `promote --rollout canary`, a new version is served first by the canary servers only
(their config file `serving-canary.config` pins it) while the stable servers stay pinned to
the version they served (`serving.config`), and `<work>/models/canary.json` says which is
which; in MLflow the alias `champion` stays on the stable version and the new one has the
alias `canary`. This step then:

  1. waits until each track serves its version;
  2. reads both tracks' Prometheus metrics, sends probe traffic from the test split to each
     track at `--probe-rate` requests a second for `--seconds`, and reads the metrics again;
  3. compares the canary's error rate and p50/p95 latency over the window with the stable
     one's (`jobs.release.canary_metrics.decide`): promote, roll back, or inconclusive (too few
     requests, which rolls back too: nothing unproven is promoted). The requests and errors
     are this step's own tally of the probes it sent and what came back; TF Serving's
     `request_count` has no label that tells them from other calls, and counts every REST
     call of the model, the kubelet's readiness GETs included, which a pod that starts
     during the window answers 404 until its version loads. The latency is the servers'
     histogram of successful predict calls, which only predict requests reach;
  4. acts (`act`, the one place a decision is carried out): promote points every server at the
     canary version and moves `champion` to it; roll back is `jobs.rollback`'s: the stable
     version's model is published again as the next version, which every server then serves
     (the canary's folder stays, out of the served history), `champion` stays on the stable
     model; either way the alias `canary` goes and the registry versions, the pipeline's
     parent run and `<work>/runs/<run>/canary.json` record it. After it, as after any
     promotion, the newest version is served everywhere and nothing is pinned.

It exits 0 after a promotion (or when no canary is in progress) and 1 after a roll back it
decided, with one line saying why: the pipeline ends failed, loudly, with the stable version
serving. `--now rollback` (an operator's call, `make canary-end`, a failed run's clean-up)
exits 0 once it is done, and ends a canary from any state it was left in
(`jobs.release.state.canary_to_end`). It exits 3 when MLflow could not be told everything
(`jobs.release.registry`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np

from jobs.core import png, serving_config
from jobs.core.cli import JobError, add_run_arguments, emit, fraction, parser, positive_float, positive_int
from jobs.core.files import write_json
from jobs.core.paths import MODEL_NAME, Work, versions
from jobs.ingest import data
from jobs.predict.client import Client, wait_for_version
from jobs.release import quality, rollback
from jobs.release.canary_metrics import (
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    Bounds,
    Decision,
    Snapshot,
    decide,
    parse,
    window,
)
from jobs.release.quality import Prediction, QualityBounds
from jobs.release.registry import lagging, reconcile, settle
from jobs.release.state import (
    CANARY,
    CHAMPION,
    canary_to_end,
    end_canary,
    lift_pins,
    read_canary,
    set_version_tags,
)
from jobs.tracking.tracker import Tracker

log = logging.getLogger("jobs.canary")

METRICS_PATH = "/monitoring/prometheus/metrics"
DEFAULT_SECONDS = 300.0
DEFAULT_PROBE_RATE = 5.0
MAX_PROBE_IMAGES = 10_000  # distinct test images the probes send; past them they start again


# -- metrics --------------------------------------------------------------------------------


def addresses(url: str) -> list[str]:
    """The base URL of every server behind `url`: a headless Service's name resolves to each
    pod's address (tf-serving-stable, tf-serving-canary); a plain host to itself. (A pod that
    goes or comes within the window is handled by `window`.)"""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise JobError(f"cannot resolve {parts.hostname} of {url}: {err.strerror or err}") from None
    # One family: `localhost` is 127.0.0.1 and ::1, one server, not two.
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    found = []
    for family, _, _, _, address in ipv4 or infos:
        host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        if f"{parts.scheme}://{host}:{port}" not in found:
            found.append(f"{parts.scheme}://{host}:{port}")
    return found


def scrape(base: str, model: str, timeout: float = 10.0) -> Snapshot:
    url = base.rstrip("/") + METRICS_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError) as err:
        raise JobError(f"cannot read the metrics at {url}: {getattr(err, 'reason', err)}") from None
    return parse(text, model)


def snapshot(url: str, model: str) -> dict[str, Snapshot]:
    """Each server's counts behind `url`, by address."""
    return {base: scrape(base, model) for base in addresses(url)}


# -- probe traffic ----------------------------------------------------------------------------


class Probe(threading.Thread):
    """Sends one test image per request to `url` at `rate` a second until stopped, image i
    as the i-th request (both tracks get the same images in the same order), and tallies the
    answers: `sent`, `failed` for every request that did not come back with a prediction per
    image (an HTTP error, no answer in time, a connection refused, no class in it), and each
    image's prediction in `answers` (jobs.release.quality judges them)."""

    def __init__(self, url: str, model: str, images: list[bytes], rate: float):
        super().__init__(name=f"probe {url}", daemon=True)
        self.client = Client(url, model, timeout=10.0)
        self.images, self.rate = images, rate
        self.stopped = threading.Event()
        self.sent = self.failed = 0
        self.answers: dict[int, Prediction] = {}

    def run(self) -> None:
        due = time.monotonic()
        while not self.stopped.is_set():
            index = self.sent % len(self.images)
            try:
                self.answers[index] = quality.prediction(self.client.classify([self.images[index]])[0])
            except JobError:
                self.failed += 1
            self.sent += 1
            due += 1.0 / self.rate
            self.stopped.wait(max(0.0, due - time.monotonic()))


@dataclasses.dataclass(frozen=True)
class Probes:
    """The probe traffic's images, encoded as clients send them, and their labels."""

    images: list[bytes]
    labels: np.ndarray


def probe_images(work: Work, dataset: str, count: int) -> Probes:
    """The first `count` images of the test split (at most all of them)."""
    folder = work.dataset(dataset)
    if not (folder / "manifest.json").exists():
        raise JobError(f"no dataset {dataset} under {work.root / 'data'}: the probe traffic sends its test images")
    test = data.load(folder, splits=("test",))["test"]
    if len(test.labels) == 0:
        raise JobError(f"the test split of {dataset} is empty: no images for the probe traffic")
    count = max(1, min(count, len(test.labels)))
    return Probes([png.encode(test.images[i]) for i in range(count)], np.asarray(test.labels[:count]))


@dataclasses.dataclass(frozen=True)
class Track:
    """One track over the window: its requests, errors and latency, and its answers by image."""

    window: Snapshot
    answers: dict[int, Prediction]


def watch(
    stable_url: str, canary_url: str, model: str, seconds: float, images: list[bytes], rate: float
) -> tuple[Track, Track]:
    """Both tracks over a window of `seconds` of probe traffic at `rate`: requests and errors
    from the probes' tally, latency from each track's servers' histograms, the answers."""
    start = {"stable": snapshot(stable_url, model), "canary": snapshot(canary_url, model)}
    probes = {"stable": Probe(stable_url, model, images, rate), "canary": Probe(canary_url, model, images, rate)}
    for probe in probes.values():
        probe.start()
    log.info("watching the canary for %g s (probe traffic: %g requests/s to each track)", seconds, rate)
    time.sleep(seconds)
    for probe in probes.values():
        probe.stopped.set()
    tracks = []
    for track, probe in probes.items():
        probe.join(timeout=30)
        log.info("probe of the %s track: %d sent, %d answered with an error", track, probe.sent, probe.failed)
        served = window(start[track], snapshot(stable_url if track == "stable" else canary_url, model))
        tracks.append(Track(Snapshot(probe.sent - probe.failed, probe.failed, served.buckets), probe.answers))
    return tracks[0], tracks[1]


# -- acting on a decision ---------------------------------------------------------------------


def act(work: Work, state: dict, decision: Decision, tracker, run_id: str) -> dict:
    """Carries out a decision: the servers re-pinned, the registry's aliases and tags, the
    records; the canary is over afterwards. The one place a promotion or roll back happens."""
    model = state.get("model", MODEL_NAME)
    promoted = decision.outcome == PROMOTE
    if promoted:
        serve = state["canary_version"]
        if serve == max(versions(work.served(model)), default=serve):
            serving_config.serve_latest(work, model)  # the steady state: the newest version everywhere
        else:  # a newer version appeared meanwhile: it was not judged, so this one stays pinned
            for track in serving_config.TRACKS:
                serving_config.pin(work, track, serve, model)
        log.info("promoted: every server serves version %d of %s", serve, model)
    else:
        # jobs.rollback's own path: the stable model published again as the next version (the
        # newest is served again everywhere, as after any rollback), the canary's version left
        # out of the served history, champion on the stable model's registry version, a line
        # in the history and a rollback run in MLflow.
        reason = f"canary of version {state['canary_version']} rolled back: " + decision.reason
        newest = max(versions(work.served(model)), default=state["canary_version"])
        if newest != state["canary_version"]:  # rolling back now would undo a later, unrelated version
            serving_config.serve_latest(work, model)
            serve = newest
            log.warning("version %d was published after this canary began: its pins are lifted, no rollback", newest)
        else:
            actor = f"canary step of run {run_id}"
            done = rollback.rollback(work, state["stable_version"], reason, actor, tracker, model, closing_canary=True)
            serve = done.version
            log.info("rolled back: every server serves version %d (version %d's model)", serve, state["stable_version"])
    record = {
        **state,
        "decision": decision.outcome,
        "action": PROMOTE if promoted else ROLLBACK,
        "reason": decision.reason,
        "figures": decision.figures,
        "served_version": serve,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decided_by_run": run_id,
    }
    registry(tracker, model, state, record)
    work.run(run_id).mkdir(parents=True, exist_ok=True)
    write_json(work.canary_record(run_id), record)
    parent = tracker.pipeline_run(work, run_id)
    tracker.set_tags(
        parent,
        {
            "canary_decision": record["action"],
            "canary_outcome": decision.outcome,
            "canary_reason": decision.reason[:4000],
            "canary_version": str(state["canary_version"]),
            "stable_version": str(state["stable_version"]),
            "served_version": str(serve),
        },
    )
    tracker.log_metrics(parent, metrics(decision))
    tracker.log_artifact(parent, work.canary_record(run_id))
    end_canary(work)
    return record


def metrics(decision: Decision) -> dict[str, float]:
    out = {}
    for track in ("stable", "canary"):
        for key, value in decision.figures[track].items():
            if value is not None:
                out[f"canary_window_{track}_{key}"] = value
    for key, value in quality.metrics(decision.figures.get("quality", {})).items():
        out[f"canary_quality_{key}"] = value
    out["canary_promoted"] = int(decision.outcome == PROMOTE)
    return out


def registry(tracker, model: str, state: dict, record: dict) -> None:
    """champion moves to the canary's registry version on a promotion; the alias canary goes
    either way; the canary's version (and the stable one's) carry the decision as tags."""
    version = state.get("registered_version")
    if not tracker.enabled or version is None:
        return
    client = tracker.client
    if record["action"] == PROMOTE:
        tracker.call("move the alias champion", lambda: client.set_registered_model_alias(model, CHAMPION, version))

    def drop_canary_alias() -> None:
        try:
            if str(client.get_model_version_by_alias(model, CANARY).version) != str(version):
                return  # a later canary has it now
        except Exception:  # no such alias: nothing to drop
            return
        client.delete_registered_model_alias(model, CANARY)

    tracker.call("remove the alias canary", drop_canary_alias)
    tags = {
        "canary_decision": record["action"],
        "canary_outcome": record["decision"],
        "canary_reason": record["reason"][:4000],
        "canary_decided_at": record["decided_at"],
        "canary_stable_version": str(state["stable_version"]),
    }
    set_version_tags(tracker, model, str(version), tags)
    stable = state.get("stable_registered_version")
    if stable is not None:
        last = f"{record['action']} of serving version {state['canary_version']}"
        set_version_tags(tracker, model, str(stable), {"canary_last_decision": last})


def record_run(
    tracker,
    work: Work,
    run_id: str,
    record: dict,
    decision: Decision,
    watching: Watch,
    bounds: Bounds,
    answers: QualityBounds,
) -> None:
    """The decision's own MLflow run, `canary-<version>` under the pipeline's: every bound and
    setting of the watch as params, every figure as metrics (with each track's prediction
    signals: images per predicted class, the confidence histogram), the outcome as tags."""
    parent = tracker.pipeline_run(work, run_id)
    tags = {
        "role": "canary",
        "pipeline_run": run_id,
        "canary_decision": record["action"],
        "canary_outcome": decision.outcome,
        "canary_reason": decision.reason[:4000],
        "canary_version": str(record["canary_version"]),
        "stable_version": str(record["stable_version"]),
    }
    run = tracker.start_run(f"canary-{record['canary_version']}", tags, parent)
    settings = {
        "seconds": watching.seconds,
        "probe_rate": watching.probe_rate,
        **dataclasses.asdict(bounds),  # errors and latency (canary_metrics.Bounds)
        **dataclasses.asdict(answers),  # what it predicts (quality.QualityBounds)
    }
    tracker.log_params(run, settings)
    tracker.log_metrics(run, {key.removeprefix("canary_"): value for key, value in metrics(decision).items()})
    tracker.end_run(run)


# -- the step -------------------------------------------------------------------------------


def build_parser():
    p = parser(__doc__.splitlines()[0])
    add_run_arguments(p)  # --dataset: whose test split the probe traffic sends
    p.add_argument("--stable-url", help="the stable servers (a headless Service in the cluster); not with --now")
    p.add_argument("--canary-url", help="the canary servers (a headless Service in the cluster); not with --now")
    p.add_argument("--model-name", default=MODEL_NAME, help="model name in the URL paths and metrics")
    p.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS, help="how long the canary is watched")
    p.add_argument(
        "--probe-rate",
        type=positive_float,
        default=DEFAULT_PROBE_RATE,
        help="probe requests a second to each track; the error rates are counted from them",
    )
    p.add_argument("--wait-timeout", type=positive_float, default=600.0, help="how long to wait for each track")
    p.add_argument(
        "--now",
        choices=(PROMOTE, ROLLBACK),
        help="decide at once, without watching (an operator's call, e.g. after a failed smoke check); ends a "
        "canary from any state it was left in (make canary-end)",
    )
    p.add_argument(
        "--only-own",
        action="store_true",
        help="with --now: end the canary only if this run (--run-id) opened it (a failed run's clean-up)",
    )
    defaults = Bounds()
    p.add_argument("--max-error-rate", type=fraction, default=defaults.max_error_rate, help="the canary's error rate")
    p.add_argument(
        "--max-error-increase",
        type=fraction,
        default=defaults.max_error_increase,
        help="the canary's error rate minus the stable one's",
    )
    p.add_argument("--max-p50-ratio", type=positive_float, default=defaults.max_p50_ratio, help="median latency ratio")
    p.add_argument("--max-p95-ratio", type=positive_float, default=defaults.max_p95_ratio, help="p95 latency ratio")
    p.add_argument(
        "--min-requests",
        type=positive_int,
        default=defaults.min_requests,
        help="canary predict requests in the window below which nothing is decided (and it rolls back)",
    )
    answers = QualityBounds()  # what the canary predicts, against stable on the same images
    p.add_argument(
        "--min-agreement",
        type=fraction,
        default=answers.min_agreement,
        help="share of the probe images given the stable version's class (0: no bound)",
    )
    p.add_argument(
        "--max-class-psi",
        type=positive_float,
        default=answers.max_class_psi,
        help="shift of the predicted class distribution from stable's, as a population stability index",
    )
    p.add_argument(
        "--accuracy-significance",
        type=fraction,
        default=answers.accuracy_significance,
        help="roll back when McNemar's exact test (the promotion gate's) finds stable more accurate "
        "on the probe images at this p or below (0: no bound)",
    )
    return p


@dataclasses.dataclass(frozen=True)
class Watch:
    """How the canary is watched: both tracks' servers, for how long, with how much probe traffic."""

    stable_url: str
    canary_url: str
    model: str
    seconds: float
    probe_rate: float
    wait_timeout: float

    @property
    def requests(self) -> int:
        """Probe requests each track gets over the window."""
        return math.ceil(self.seconds * self.probe_rate)


def judge(watching: Watch, probes: Probes, state: dict, bounds: Bounds, answers: QualityBounds) -> Decision:
    """Waits for both tracks, watches them, and decides on their errors, latency and answers."""
    tracks = ((watching.stable_url, state["stable_version"]), (watching.canary_url, state["canary_version"]))
    for url, version in tracks:
        wait_for_version(Client(url, watching.model), version, watching.wait_timeout)
    stable, canary = watch(
        watching.stable_url, watching.canary_url, watching.model, watching.seconds, probes.images, watching.probe_rate
    )
    verdict = quality.judge(stable.answers, canary.answers, probes.labels, answers)
    decision = quality.combined(decide(stable.window, canary.window, bounds), verdict)
    log.info(
        "canary version %d against stable %d: %s (%s)",
        state["canary_version"],
        state["stable_version"],
        decision.outcome,
        decision.reason,
    )
    return decision


def main(argv: Sequence[str] | None = None) -> int:

    args = build_parser().parse_args(argv)
    bounds = Bounds(
        args.max_error_rate, args.max_error_increase, args.max_p50_ratio, args.max_p95_ratio, args.min_requests
    )
    answers = QualityBounds(args.min_agreement, args.max_class_psi, args.accuracy_significance)
    work = Work(args.work_dir)
    if not args.now and not (args.stable_url and args.canary_url):
        raise JobError("--stable-url and --canary-url are required to watch a canary (or decide at once with --now)")
    state = canary_to_end(work, args.model_name) if args.now else read_canary(work)
    if state is not None and args.only_own and state.get("run_id") != args.run_id:
        log.info("the canary in progress was opened by run %s, not %s: left as it is", state.get("run_id"), args.run_id)
        state = None
    elif state is None and args.now:
        lift_pins(work, args.model_name)
    tracker = Tracker()
    if state is None:
        log.info("no canary in progress (%s is absent): nothing to watch", work.canary_state)
        emit(canary="none")
        settle(work, tracker, "no canary is open", args.model_name)
        return 0
    watching = Watch(
        args.stable_url, args.canary_url, args.model_name, args.seconds, args.probe_rate, args.wait_timeout
    )
    if args.now:
        empty = {"requests": 0, "errors": 0, "error_rate": None, "p50_seconds": None, "p95_seconds": None}
        decision = Decision(args.now, (f"decided by hand (--now {args.now})",), {"stable": empty, "canary": empty})
    else:
        probes = probe_images(work, args.dataset, min(watching.requests, MAX_PROBE_IMAGES))
        decision = judge(watching, probes, state, bounds, answers)
    record = act(work, state, decision, tracker, args.run_id)
    record_run(tracker, work, args.run_id, record, decision, watching, bounds, answers)
    c, q = decision.figures["canary"], decision.figures.get("quality", {})
    emit(
        decision=record["action"],
        outcome=decision.outcome,
        served_version=record["served_version"],
        canary_requests=c["requests"],
        canary_errors=c["errors"],
        compared_images=q.get("images", 0),
        **{key: q[key] for key in ("agreement", "class_psi", "accuracy_p_value") if q.get(key) is not None},
        min_agreement=answers.min_agreement,
        max_class_psi=answers.max_class_psi,
        accuracy_significance=answers.accuracy_significance,
    )
    behind = reconcile(work, tracker, state.get("model", MODEL_NAME))
    if decision.outcome != PROMOTE and not args.now:  # by hand, a roll back is what was asked for
        what = "too few requests to decide" if decision.outcome == INCONCLUSIVE else decision.reason
        what += f" (and MLflow is behind: {', '.join(behind)})" if behind else ""
        raise JobError(
            f"canary version {state['canary_version']} rolled back to {state['stable_version']} "
            f"(its model served again as version {record['served_version']}): {what}"
        )
    if behind:
        raise lagging(f"the canary was decided ({record['action']}, version {record['served_version']} served)", behind)
    return 0
