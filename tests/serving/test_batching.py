"""The work queue without TensorFlow: a fake signature call records what it is given.

Merged calls, the search for a failing instance, fair interleaving of heavy and light work,
one lane each for light and heavy calls on two workers,
the bounded queue, deadlines and dropping the work of a client that has gone."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from jobs.serving.batching import Gone, Scheduler, Work
from jobs.serving.errors import INTERNAL, ApiError
from jobs.serving.limits import INLINE_PIXELS

SERVABLE, SIGNATURE = object(), object()


class Calls:
    """A signature call: doubles `x`, fails on a negative value, and can be held at a gate."""

    def __init__(self):
        self.sizes: list[int] = []
        self.values: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, servable, signature, inputs):
        with self.lock:
            self.sizes.append(len(inputs["x"]))
            self.values.append(inputs["x"].tolist())
        self.entered.set()
        assert self.gate.wait(30)
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        return {"y": inputs["x"] * 2}


def work(values, costs=None, deadline=None, where="instances", batchable=True) -> Work:
    values = np.asarray(values)
    rows = len(values) if batchable else 1
    costs = np.full(rows, 1, np.int64) if costs is None else np.asarray(costs, np.int64)
    deadline = deadline or time.monotonic() + 30
    return Work(SERVABLE, SIGNATURE, {"x": values}, costs, where, deadline, 30.0, batchable)


def api_error(err: BaseException) -> ApiError:
    """What the scheduler makes of a failed call: TensorFlow's code, as servable.as_api_error."""
    return ApiError("INVALID_ARGUMENT", str(err)) if isinstance(err, ValueError) else ApiError("INTERNAL", INTERNAL)


def scheduler(calls: Calls, threads=1, max_batch=64, chunk_pixels=1000, max_queued=10**9, light=100) -> Scheduler:
    return Scheduler(
        threads,
        max_batch,
        chunk_pixels,
        max_queued,
        light,
        call=calls,
        api_error=api_error,
    )


def hold_first_call(calls: Calls, sched: Scheduler) -> concurrent.futures.Future:
    """Occupies the worker with a one-instance call held at the gate."""
    calls.gate.clear()
    calls.entered.clear()
    future = sched.submit(work([1000]))
    assert calls.entered.wait(10)
    return future


def test_waiting_requests_are_merged_and_split_back():
    calls = Calls()
    sched = scheduler(calls)
    try:
        held = hold_first_call(calls, sched)
        futures = [sched.submit(work([i, i + 1])) for i in range(0, 20, 2)]
        calls.gate.set()
        assert held.result(10)["y"].tolist() == [2000]
        for i, future in zip(range(0, 20, 2), futures, strict=True):
            assert future.result(10)["y"].tolist() == [2 * i, 2 * i + 2]
        assert calls.sizes == [1, 20]  # one call for the ten waiting requests
    finally:
        sched.close()


def test_a_failing_instance_is_found_by_halves():
    """32 one-image requests merged into one call, one of them bad: the bad one gets a 400,
    the others their answers, in about 2 log2(32) merged calls rather than 32 single ones."""
    calls = Calls()
    sched = scheduler(calls)
    try:
        held = hold_first_call(calls, sched)
        futures = [sched.submit(work([-1 if i == 13 else i])) for i in range(32)]
        calls.gate.set()
        held.result(10)
        for i, future in enumerate(futures):
            if i == 13:
                with pytest.raises(ApiError) as err:
                    future.result(10)
                assert err.value.status == 400 and err.value.message == "instances[0]: negative"
            else:
                assert future.result(10)["y"].tolist() == [2 * i]
        merged = calls.sizes[1:]
        assert merged[0] == 32 and len(merged) <= 2 * 5 + 1, merged
        assert sum(1 for values in calls.values[1:] if len(values) == 1 and values[0] >= 0) <= 5, calls.values
    finally:
        sched.close()


def test_work_that_is_not_a_batch_runs_whole_and_alone():
    """A request whose signature has no batch dimension (or a columnar request of odd shapes) is
    neither cut nor merged, and its failure is the model's error as it is."""
    calls = Calls()
    sched = scheduler(calls, max_batch=2)
    try:
        held = hold_first_call(calls, sched)
        whole = sched.submit(work([1, 2, 3, 4, 5], batchable=False))
        merged = [sched.submit(work([i])) for i in range(3)]
        failing = sched.submit(work([1, -1], batchable=False))
        calls.gate.set()
        held.result(10)
        assert whole.result(10)["y"].tolist() == [2, 4, 6, 8, 10]
        assert [f.result(10)["y"].tolist() for f in merged] == [[0], [2], [4]]
        with pytest.raises(ApiError) as err:
            failing.result(10)
        assert err.value.message == "negative"  # no index: the request failed as a whole
        assert [5] in [[len(v)] for v in calls.values] and [1, -1] in calls.values
    finally:
        sched.close()


def test_the_failing_instance_of_a_request_is_named_by_its_index():
    calls = Calls()
    sched = scheduler(calls)
    try:
        held = hold_first_call(calls, sched)
        good = sched.submit(work([1, 2, 3]))
        bad = sched.submit(work([5, 6, -7, 8], where="inputs"))
        calls.gate.set()
        held.result(10)
        assert good.result(10)["y"].tolist() == [2, 4, 6]
        with pytest.raises(ApiError) as err:
            bad.result(10)
        assert err.value.message == "inputs[2]: negative"
    finally:
        sched.close()


def test_a_light_request_passes_a_heavy_one():
    """A heavy request (many chunks) in the queue first, a light one after: the light one runs
    after at most the chunk that is running."""
    calls = Calls()
    sched = scheduler(calls, chunk_pixels=100, light=1000)
    try:
        hold_first_call(calls, sched)
        heavy = sched.submit(work(list(range(100, 110)), costs=[100] * 10))  # ten chunks
        light = sched.submit(work([7]))
        calls.gate.set()
        assert light.result(10)["y"].tolist() == [14]
        assert heavy.result(10)["y"].tolist() == [2 * v for v in range(100, 110)]
        order = [v[0] for v in calls.values]
        assert order.index(7) <= 2, order  # held call, at most one heavy chunk, then the light one
    finally:
        sched.close()


def test_heavy_work_leaves_a_worker_for_light_work():
    calls = Calls()
    sched = scheduler(calls, threads=2, chunk_pixels=10_000, light=100)
    try:
        calls.gate.clear()
        heavy = [sched.submit(work([1000 + i], costs=[5000])) for i in range(2)]
        assert calls.entered.wait(10)
        time.sleep(0.2)  # time for the second worker to take a heavy chunk, were it allowed to
        assert len(calls.sizes) == 1, calls.values
        calls.gate.set()  # (the gate is shared: the light call must not wait on it)
        light = sched.submit(work([3]))
        assert light.result(10)["y"].tolist() == [6]
        for future in heavy:
            future.result(10)
    finally:
        sched.close()


def test_light_calls_leave_a_worker_too_so_arrivals_merge():
    """Two workers, one light call held: requests arriving meanwhile wait for it and go into one
    merged call, rather than the second worker taking the first of them alone; a heavy request
    still gets the second worker at once."""
    calls = Calls()
    sched = scheduler(calls, threads=2, chunk_pixels=10_000, light=100)
    try:
        held = hold_first_call(calls, sched)
        light = [sched.submit(work([i])) for i in range(8)]
        time.sleep(0.2)  # time for the second worker to take a light call, were it allowed to
        assert calls.sizes == [1], calls.values
        heavy = sched.submit(work([500], costs=[5000]))
        deadline = time.monotonic() + 10
        while len(calls.sizes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls.values[1] == [500]  # the heavy lane is free
        calls.gate.set()
        held.result(10), heavy.result(10)
        assert [future.result(10)["y"].tolist() for future in light] == [[2 * i] for i in range(8)]
        assert sorted(calls.sizes) == [1, 1, 8], calls.values  # the eight in one call
    finally:
        sched.close()


def test_a_lone_small_quick_request_runs_on_the_calling_thread():
    """`alone` (no other request in flight), nothing queued or running, one small chunk, and
    a signature whose last call was quick: the call is made by the caller, and the answer is
    there when submit returns. Its first call, a slow signature, other work about, too many
    pixels or not alone: a worker."""
    calls = Calls()
    threads: list[str] = []
    delay = {"fast": 0.0, "slow": 0.05}

    def traced(servable, signature, inputs):
        threads.append(threading.current_thread().name)
        time.sleep(delay.get(signature, 0.0))
        return calls(servable, signature, inputs)

    def lone(values, signature="fast", **kwargs) -> concurrent.futures.Future:
        item = work(values, **kwargs)
        item.signature = signature
        return sched.submit(item, alone=True)

    sched = Scheduler(1, 64, 10**6, 10**9, 10**5, call=traced, api_error=api_error)
    try:
        assert lone([1]).result(10)["y"].tolist() == [2]  # first call: its pace is not known
        assert threads == ["predict-0"]
        future = lone([3])
        assert future.done() and future.result()["y"].tolist() == [6]
        assert threads[-1] == threading.current_thread().name
        failing = lone([1, -2, 3])  # the same search for the bad instance, on this thread
        with pytest.raises(ApiError) as err:
            failing.result(0)
        assert err.value.message == "instances[1]: negative"
        threads.clear()
        sched.submit(work([4]), alone=False).result(10)
        lone([5], costs=[INLINE_PIXELS + 1]).result(10)
        lone([6], "slow").result(10)
        lone([7], "slow").result(10)  # 50 ms a call: never on the event loop
        assert threads == ["predict-0"] * 4
        held = hold_first_call(calls, sched)
        waiting = lone([8])  # a call is running: not alone after all
        assert not waiting.done()
        calls.gate.set()
        assert held.result(10)["y"].tolist() == [2000] and waiting.result(10)["y"].tolist() == [16]
        assert threads[-1] == "predict-0"
    finally:
        sched.close()


def test_a_full_queue_is_a_503_with_retry_after():
    calls = Calls()
    sched = scheduler(calls, max_queued=1500)
    try:
        held = hold_first_call(calls, sched)  # costs 1
        queued = sched.submit(work([1, 2], costs=[700, 700]))
        with pytest.raises(ApiError) as err:
            sched.submit(work([3], costs=[200]))
        assert err.value.status == 503 and err.value.headers["retry-after"].isdigit()
        calls.gate.set()
        held.result(10)
        queued.result(10)
        assert sched.submit(work([3], costs=[200])).result(10)["y"].tolist() == [6]  # room again
    finally:
        sched.close()


def test_heavy_work_filling_the_queue_does_not_turn_light_work_away():
    calls = Calls()
    sched = scheduler(calls, max_queued=1500, light=100)
    try:
        held = hold_first_call(calls, sched)
        queued = sched.submit(work([1, 2], costs=[700, 700]))
        with pytest.raises(ApiError):
            sched.submit(work([3], costs=[200]))  # heavy: no room
        light = sched.submit(work([4], costs=[50]))  # light: its own room
        calls.gate.set()
        for future in (held, queued, light):
            future.result(10)
    finally:
        sched.close()


def test_work_past_its_deadline_is_dropped_with_504():
    calls = Calls()
    sched = scheduler(calls)
    try:
        held = hold_first_call(calls, sched)
        late = sched.submit(work([1, 2, 3], deadline=time.monotonic() + 0.05))
        time.sleep(0.1)
        calls.gate.set()
        held.result(10)
        with pytest.raises(ApiError) as err:
            late.result(10)
        assert err.value.status == 504
        assert all(1 not in v for v in calls.values), calls.values  # never run
    finally:
        sched.close()


def test_the_work_of_a_client_that_has_gone_is_dropped():
    calls = Calls()
    sched = scheduler(calls, chunk_pixels=1, light=1000)
    try:
        calls.gate.clear()
        first = work(list(range(10)))  # ten one-instance chunks
        future = sched.submit(first)
        assert calls.entered.wait(10)
        sched.cancel(first)
        calls.gate.set()
        with pytest.raises(Gone):
            future.result(10)
        time.sleep(0.2)
        assert calls.values == [[0]], calls.values  # only the chunk that was running
        assert sched.queued_pixels == 0
    finally:
        sched.close()


# --- the cluster's TF Serving batches as this server does ---------------------------------


def batching_parameters_class():
    """TF Serving's BatchingParameters (servables/tensorflow/session_bundle_config.proto at
    2.20.0; not in tensorflow-serving-api), built from its field list to parse the file as TF
    Serving's ParseProtoTextFile would."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    fields = [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    ]
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="batching.proto", package="tensorflow.serving", dependency=["google/protobuf/wrappers.proto"]
    )
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind in fields:
        message.field.add(name=name, number=number, type=11, label=1, type_name=f".google.protobuf.{kind}")
    message.field.add(name="allowed_batch_sizes", number=6, type=3, label=3)
    message.field.add(name="pad_variable_length_inputs", number=7, type=8, label=1)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_the_cluster_batches_as_this_server_does():
    """kustomize/base/batching.config parses as TF Serving's BatchingParameters, and merges and
    cuts requests as jobs.serve does by default; the Deployments read it with --enable_batching."""
    from pathlib import Path

    import yaml
    from google.protobuf import text_format

    from jobs.serving.cli import build_parser
    from jobs.serving.limits import Limits

    root = Path(__file__).resolve().parents[2]
    params = text_format.Parse((root / "kustomize/base/batching.config").read_text(), batching_parameters_class()())
    defaults = build_parser().parse_args(["--model-base-path", "."])
    assert params.max_execution_batch_size.value == defaults.max_batch
    assert params.max_batch_size.value == Limits().max_instances >= params.max_execution_batch_size.value
    assert params.enable_large_batch_splitting.value and params.batch_timeout_micros.value == 0
    for manifest in ("kustomize/base/serving.yaml", "kustomize/components/canary/serving-canary.yaml"):
        (deployment,) = [d for d in yaml.safe_load_all((root / manifest).read_text()) if d["kind"] == "Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
        assert args["--enable_batching"] == "true", manifest
        assert args["--batching_parameters_file"] == "/etc/tf-serving/batching.config", manifest
