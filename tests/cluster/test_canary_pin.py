"""A canary promotion never reaches the stable servers, whichever way their two polls fall.

TF Serving 2.20 re-reads its model config file on one timer (`model_servers/server.cc`,
`--model_config_file_poll_wait_seconds`; ServerCore::ReloadConfig hands the new version policy
to the storage path source, `FileSystemStoragePathSource::UpdateConfig`, which only stores it)
and lists the model folder on another (`sources/storage_path/file_system_storage_path_source.cc`,
`--file_system_poll_wait_seconds`): each folder poll aspires the versions the policy it holds
picks from what is on disk (`latest {num_versions: 1}`: the highest; `specific`: those named
and present). So a version that appears in the folder before a server has read its pin is
loaded as the latest one.

The real `jobs.release.promote.promote` runs here with `--rollout canary` over a served version; every
rename it makes under the models folder (a config file replaced, a version published) is
recorded with the time on a clock that only its settle wait (jobs.core.serving_config.hold)
advances. Then each server is
simulated with the rendered poll periods and every combination of phases (a config poll before
a folder poll, and after it, in the same period): a stable server must never aspire the new
version, a canary server must end up on it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest

from jobs.core import serving_config
from jobs.core.files import write_json
from jobs.core.paths import Work, versions
from jobs.release import promote as promote_job
from jobs.release.selection import Gate
from tests.cluster.test_serving_start import flags
from tests.helpers.jobs import evaluated

STEP = 0.01  # the time one rename takes on the recorded clock
PHASES = 10  # per poll period: offsets 0, P/10, ... for each timer


@dataclasses.dataclass(frozen=True)
class State:
    time: float
    pins: dict[str, tuple[int, ...] | None]  # track -> pinned versions, () latest, None no model
    on_disk: tuple[int, ...]


def snapshot(work: Work, now: float) -> State:
    pins = {track: serving_config.pinned(serving_config.track_path(work, track)) for track in serving_config.TRACKS}
    return State(now, pins, tuple(versions(work.served())))


def aspired(pins: tuple[int, ...] | None, on_disk: tuple[int, ...]) -> set[int]:
    """What FileSystemStoragePathSource aspires for a model under its version policy."""
    if pins is None or not on_disk:
        return set()
    if pins == ():
        return {max(on_disk)}
    return {v for v in pins if v in on_disk}


def simulate(states: list[State], track: str, config_period: float, folder_period: float, phases: tuple[float, float]):
    """(every version the server aspired, what it aspires at the end), for one server whose
    config poll and folder poll run at these phases."""
    end = states[-1].time + 3 * max(config_period, folder_period)

    def at(t: float) -> State:
        return [s for s in states if s.time <= t][-1]

    polls = []
    for kind, period, phase in (("config", config_period, phases[0]), ("folder", folder_period, phases[1])):
        t = phase
        while t <= end:
            polls.append((t, kind))
            t += period
    policy = states[0].pins[track]
    now = aspired(policy, states[0].on_disk)
    seen = set(now)
    for t, kind in sorted(polls):
        if kind == "config":
            policy = at(t).pins[track]
        else:
            now = aspired(policy, at(t).on_disk)
            seen |= now
    return seen, now


def periods(overlay, name: str) -> tuple[float, float]:
    deployment = next(d for d in overlay if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    args = flags(deployment["spec"]["template"]["spec"]["containers"][0])
    return float(args["model_config_file_poll_wait_seconds"]), float(args["file_system_poll_wait_seconds"])


def every_phase(config_period: float, folder_period: float):
    """Both orders within a period: config before folder, folder before config, together."""
    return itertools.product(
        [config_period * i / PHASES for i in range(PHASES)], [folder_period * i / PHASES for i in range(PHASES)]
    )


def leaks(states: list[State], config_period: float, folder_period: float, new: int) -> list[tuple[float, float]]:
    return [
        phases
        for phases in every_phase(config_period, folder_period)
        if new in simulate(states, "stable", config_period, folder_period, phases)[0]
    ]


@pytest.fixture
def recorded(ingested, untrained_model, monkeypatch):
    """A served version 1 (every server on `latest`), two candidates, and the renames of one
    `promote --rollout canary --force` with the settle wait on a recorded clock."""
    work = Work(ingested)
    shutil.copytree(untrained_model, work.served() / "1")
    write_json(work.served() / "1" / "promotion.json", {"run_id": "a", "model": "cnn", "dataset": "synthetic"})
    serving_config.pin(work, "stable", None)
    serving_config.pin(work, "canary", None)
    for name, score in (("cnn", 0.5), ("dropout", 0.6)):
        shutil.copytree(untrained_model, work.candidate("b", name).model)
        evaluated(work, "b", name, validation_accuracy=score)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    clock = [0.0]
    states = [snapshot(work, clock[0])]
    models = work.root / "models"

    def recording(original):
        def rename(src, dst, *args, **kwargs):
            result = original(src, dst, *args, **kwargs)
            if Path(dst).resolve().is_relative_to(models.resolve()):
                clock[0] += STEP
                states.append(snapshot(work, clock[0]))
            return result

        return rename

    monkeypatch.setattr(os, "replace", recording(os.replace))
    monkeypatch.setattr(os, "rename", recording(os.rename))
    # (raising=False: a promote without a settle wait, as this project had, runs all the same.)
    monkeypatch.setattr(
        serving_config, "settle", lambda seconds: clock.__setitem__(0, clock[0] + seconds), raising=False
    )
    result = promote_job.promote(work, "b", "synthetic", ["cnn", "dropout"], True, Gate(0.05, 0.002), "canary")
    monkeypatch.undo()
    assert result.version == 2 and result.canary["stable_version"] == 1
    assert json.loads((models / "canary.json").read_text())["canary_version"] == 2
    return states


def test_the_stable_servers_never_load_the_canary_version(recorded, overlay):
    config_period, folder_period = periods(overlay, "tf-serving")
    assert leaks(recorded, config_period, folder_period, new=2) == [], "(config poll, folder poll) phases that leak"
    for phases in every_phase(*periods(overlay, "tf-serving-canary")):
        assert simulate(recorded, "canary", *periods(overlay, "tf-serving-canary"), phases)[1] == {2}
        assert simulate(recorded, "stable", config_period, folder_period, phases)[1] == {1}
    for name in ("tf-serving", "tf-serving-canary"):
        config_period, _ = periods(overlay, name)
        assert config_period + 1 < serving_config.SETTLE_SECONDS, f"{name} may not have read its pin"


def test_the_model_catches_the_races(recorded, overlay):
    """Publishing first, or pinning without giving the servers time to read the pin, leaks the
    canary to stable servers whose folder poll comes before their config poll."""
    config_period, folder_period = periods(overlay, "tf-serving")
    before = recorded[0]
    published = State(STEP, before.pins, (1, 2))
    pinned = {"stable": (1,), "canary": (2,)}
    publish_then_pin = [before, published, State(2 * STEP, pinned, (1, 2))]
    assert leaks(publish_then_pin, config_period, folder_period, new=2)
    pin_then_publish = [before, State(STEP, {**before.pins, "stable": (1,)}, (1,)), State(2 * STEP, pinned, (1, 2))]
    found = leaks(pin_then_publish, config_period, folder_period, new=2)
    assert found and len(found) < PHASES * PHASES, "only where the folder poll comes first"
    waited = [
        before,
        State(STEP, {**before.pins, "stable": (1,)}, (1,)),
        State(STEP + config_period + 1, pinned, (1, 2)),
    ]
    assert not leaks(waited, config_period, folder_period, new=2)
