"""Signature calls on worker threads: a bounded queue, fair interleaving, merged calls.

Each request becomes a `Work`. When its signature declares a leading batch dimension on every
input and output (Signature.batchable) and the request is a batch, its instances are cut into
chunks of at most `max_batch` instances and `chunk_pixels` of decoding cost; any other request
runs whole, in one call of its own. A free worker takes the next chunk of the work that has had
the least done so far (oldest first among equals), so a one-image request is not stuck behind a
heavy one, and adds the next chunks of other batchable works for the same version and signature
(with inputs of the same types and inner shapes) up to the same bounds: that merging is where a
2-core machine gets its throughput under concurrency, and an idle server adds no waiting time.
Heavy chunks (over `light_pixels`) may occupy every worker but one, so a light request always
finds one free; light ones too, so that the calls are few and full: while one runs, the requests
arriving meanwhile queue up and go into the next (two half-full calls at once on 2 cores cost
more than one full one, and both would take the cores from the event loop).

Admission is bounded by the decoding cost (pixels of images, else values) of the work waiting or
running (a 503 past it), counted apart for light requests (each at most `light_pixels`) and
heavy ones, so that heavy requests filling the queue do not turn light ones away. Work whose
deadline has passed or whose client has gone is dropped before its next chunk. A call that fails
fails its requests with TensorFlow's code and message, as TF Serving answers; if a call of a
batch fails on its input, the batch is split in halves until the failing instance is found: it
fails its own request, named by index (`instances[3]: ...`), and the rest are answered.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from jobs.serving import servable as servables
from jobs.serving.errors import INTERNAL, ApiError, deadline_exceeded, overloaded
from jobs.serving.limits import INLINE_PIXELS, INLINE_SECONDS, LIGHT_PIXELS, RETRY_AFTER_SECONDS
from jobs.serving.servable import Servable, Signature

CLIENT_ERRORS = ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION")  # the input's fault

log = logging.getLogger("jobs.serve")

_sequence = itertools.count()
PACE_ENTRIES = 256  # signatures whose last call's pace is kept


class Gone(Exception):
    """The client of a work went away; nobody waits for its answer."""


class Work:
    """One request's predict work."""

    def __init__(
        self,
        servable: Servable,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        costs: np.ndarray,
        where: str,
        deadline: float,
        timeout: float,
        batchable: bool = True,
    ):
        self.servable = servable
        self.signature = signature
        self.inputs = inputs
        self.costs = costs  # decoded pixels per instance
        self.size = len(costs)
        self.cost = int(costs.sum())
        self.where = where  # "instances" or "inputs", to name a failing instance
        self.deadline = deadline
        self.timeout = timeout
        self.batchable = batchable  # may be cut into chunks and merged with other works
        self.shapes = {name: (value.dtype, value.shape[1:]) for name, value in inputs.items()}
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.sequence = next(_sequence)
        self.chunks: collections.deque[tuple[int, int]] = collections.deque()
        self.parts: dict[int, dict[str, np.ndarray]] = {}
        self.running = 0
        self.attained = 0
        self.done = False

    def cut(self, max_instances: int, max_pixels: int) -> None:
        if not self.batchable:
            self.chunks.append((0, self.size))
            return
        start = 0
        while start < self.size:
            end, pixels = start, 0
            while (
                end < self.size
                and end - start < max_instances
                and (end == start or pixels + self.costs[end] <= max_pixels)
            ):
                pixels += int(self.costs[end])
                end += 1
            self.chunks.append((start, end))
            start = end

    def slice(self, start: int, end: int) -> dict[str, np.ndarray]:
        return {name: value[start:end] for name, value in self.inputs.items()}


Item = tuple[Work, int, int]  # a work's instances [start, end) in a batch


class Scheduler:
    def __init__(
        self,
        threads: int,
        max_batch: int,
        chunk_pixels: int,
        max_queued_pixels: int,
        light_pixels: int = LIGHT_PIXELS,
        on_batch: Callable[[int], None] | None = None,
        call: Callable[[Servable, Signature, dict[str, np.ndarray]], dict[str, np.ndarray]] = servables.call,
        api_error: Callable[[BaseException], ApiError] = servables.as_api_error,
    ):
        self.max_batch = max_batch
        self.chunk_pixels = chunk_pixels
        self.max_queued_pixels = max_queued_pixels
        self.light_pixels = light_pixels
        self._on_batch = on_batch or (lambda size: None)
        self._call = call
        self._api_error = api_error
        self._works: list[Work] = []
        self._queued = {True: 0, False: 0}  # heavy?: pixels of work waiting or running
        self._running = {True: 0, False: 0}  # heavy?: calls running
        # seconds per instance of each signature's last call (by id, with the signature itself)
        self._pace: dict[int, tuple[Signature, float]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"predict-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    @property
    def queued_pixels(self) -> int:
        return self._queued[True] + self._queued[False]

    def submit(self, work: Work, alone: bool = False) -> concurrent.futures.Future:
        """Queues a work; its future holds its outputs or its error. `alone`: the caller has no
        other request in flight, so a small, quick work may run here and now (_take_alone)."""
        work.cut(self.max_batch, self.chunk_pixels)
        with self._cond:
            if self._closed:
                raise overloaded("The server is shutting down", RETRY_AFTER_SECONDS)
            heavy = work.cost > self.light_pixels
            queued = self._queued[heavy]
            if queued and queued + work.cost > self.max_queued_pixels:
                raise overloaded(
                    f"The server is busy: {queued} pixels of work are queued "
                    f"(limit {self.max_queued_pixels}); retry later",
                    RETRY_AFTER_SECONDS,
                )
            self._works.append(work)
            self._queued[heavy] += work.cost
            batch = self._take_alone(work) if alone else None
            if batch is None:
                self._cond.notify()
        if batch is not None:
            self._execute(batch, False)
        return work.future

    def _take_alone(self, work: Work) -> list[Item] | None:
        """The work as a batch to run on the calling thread, when it is the only work and small
        (one chunk of at most INLINE_PIXELS) and quick (its signature's last call, per
        instance, times its instances within INLINE_SECONDS: any SavedModel may be served, and
        a slow one must not hold the event loop): an idle server then saves the hand-off to a
        worker and back (two thread wake-ups, about 0.2 ms of a 1 ms one-image request here).
        Under any concurrency there is other work, and every call goes to the workers."""
        if len(self._works) > 1 or any(self._running.values()) or len(work.chunks) != 1 or work.cost > INLINE_PIXELS:
            return None
        known = self._pace.get(id(work.signature))
        if known is None or known[0] is not work.signature or known[1] * work.size > INLINE_SECONDS:
            return None  # a signature not called yet, or too slow to hold the event loop for
        start, end = work.chunks.popleft()
        work.running += 1
        work.attained += work.cost
        self._running[False] += 1
        return [(work, start, end)]

    def cancel(self, work: Work) -> None:
        """Drops what is left of a work whose client has gone."""
        with self._cond:
            self._finish(work, Gone())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for work in list(self._works):
                self._finish(work, overloaded("The server is shutting down", RETRY_AFTER_SECONDS))
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    # Worker side (all state below is changed under self._cond).

    def _finish(self, work: Work, error: BaseException | None = None) -> None:
        if work.done:
            return
        work.done = True
        work.chunks.clear()
        self._works.remove(work)
        self._queued[work.cost > self.light_pixels] -= work.cost
        if error is not None:
            if not work.future.done():
                work.future.set_exception(error)
            return
        starts = sorted(work.parts)
        if len(starts) == 1:
            outputs = work.parts[starts[0]]
        else:
            outputs = {name: np.concatenate([work.parts[s][name] for s in starts]) for name in work.parts[0]}
        if not work.future.done():  # its waiter may have given up (and cancelled it) just now
            work.future.set_result(outputs)

    def _next_pixels(self, work: Work) -> int:
        start, end = work.chunks[0]
        return int(work.costs[start:end].sum())

    def _take(self) -> tuple[list[Item], bool] | None:
        """The next batch, and whether it is heavy. Heavy chunks (over LIGHT_PIXELS) and light
        ones may each hold all workers but one."""
        with self._cond:
            while True:
                now = time.monotonic()
                for work in [w for w in self._works if w.chunks and now > w.deadline]:
                    self._finish(work, deadline_exceeded(work.timeout))
                lanes = max(1, len(self._threads) - 1)
                heavy_ok, light_ok = self._running[True] < lanes, self._running[False] < lanes
                ready = [
                    w
                    for w in self._works
                    if w.chunks and (heavy_ok if self._next_pixels(w) > self.light_pixels else light_ok)
                ]
                if ready:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            ready.sort(key=lambda w: (w.attained, w.sequence))
            first = ready[0]
            batch: list[Item] = []
            instances = pixels = 0
            heavy = False
            for work in ready:
                if batch and not _mergeable(first, work):
                    continue
                chunk_pixels = self._next_pixels(work)
                start, end = work.chunks[0]
                if batch and (instances + end - start > self.max_batch or pixels + chunk_pixels > self.chunk_pixels):
                    continue
                if batch and heavy != (chunk_pixels > self.light_pixels):
                    continue  # heavy and light chunks run apart
                heavy = chunk_pixels > self.light_pixels
                work.chunks.popleft()
                work.running += 1
                work.attained += chunk_pixels
                batch.append((work, start, end))
                instances += end - start
                pixels += chunk_pixels
            self._running[heavy] += 1
            return batch, heavy

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            self._execute(*taken)
            del taken  # do not hold a retired version while waiting for the next job

    def _execute(self, batch: list[Item], heavy: bool) -> None:
        """Runs a batch that was taken (its chunks counted as running) and settles its works."""
        try:
            self._run(batch)
        except Exception:  # a fault of this server: every request in the batch gets a 500
            log.exception("signature %s failed", getattr(batch[0][0].signature, "name", "?"))
            with self._cond:
                for work, _, _ in batch:
                    self._finish(work, ApiError("INTERNAL", INTERNAL))
        with self._cond:
            for work, _, _ in batch:
                work.running -= 1
                if not work.done and not work.chunks and work.running == 0:
                    self._finish(work)
            self._running[heavy] -= 1
            self._cond.notify_all()

    def _run(self, batch: list[Item]) -> None:
        with self._cond:
            batch = [item for item in batch if not item[0].done]
        if not batch:
            return
        first = batch[0][0]
        inputs = {
            name: np.concatenate([work.inputs[name][start:end] for work, start, end in batch])
            if len(batch) > 1
            else (first.inputs[name] if not first.batchable else first.inputs[name][batch[0][1] : batch[0][2]])
            for name in first.inputs
        }
        started = time.perf_counter()
        try:
            outputs = self._call(first.servable, first.signature, inputs)
        except Exception as err:
            error = self._api_error(err)
            if error.code == "INTERNAL" and error.message == INTERNAL:
                raise  # not TensorFlow's error: this server's fault, logged by the caller
            if error.code in CLIENT_ERRORS and first.batchable:
                self._bisect(batch, error)
            else:
                self._fail(batch, error)
            return
        total = sum(end - start for _, start, end in batch)
        self._timed(first.signature, time.perf_counter() - started, total)
        self._on_batch(total)
        if first.batchable and any(np.ndim(value) == 0 or len(value) != total for value in outputs.values()):
            if len(batch) > 1:
                for item in batch:  # the model does not keep the batch: each on its own
                    self._run([item])
                return
            if batch[0][1] != 0 or batch[0][2] != first.size:
                raise ValueError(f"signature {first.signature.name} does not keep the batch dimension")
        with self._cond:
            if not first.batchable or len(batch) == 1 and batch[0][1] == 0 and batch[0][2] == first.size:
                batch[0][0].parts[0] = outputs
                return
            offset = 0
            for work, start, end in batch:
                count = end - start
                work.parts[start] = {name: value[offset : offset + count] for name, value in outputs.items()}
                offset += count

    def _timed(self, signature: Signature, seconds: float, instances: int) -> None:
        with self._cond:
            if len(self._pace) > PACE_ENTRIES:
                self._pace.clear()  # signatures of versions long gone
            self._pace[id(signature)] = (signature, seconds / max(instances, 1))

    def _fail(self, batch: list[Item], error: ApiError) -> None:
        with self._cond:
            for work, _, _ in batch:
                self._finish(work, error)

    def _bisect(self, batch: list[Item], error: ApiError) -> None:
        """A call failed on its input: find the instance by halves; the others still run."""
        if len(batch) == 1 and batch[0][2] - batch[0][1] == 1:
            work, start, _ = batch[0]
            with self._cond:
                self._finish(work, ApiError(error.code, f"{work.where}[{start}]: {error.message}"))
            return
        items = _halves_of_one(batch[0]) if len(batch) == 1 else batch
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            self._run(part)


def _mergeable(first: Work, other: Work) -> bool:
    """Works whose chunks may go into one call: batchable, for the same version and signature,
    with inputs of the same types and inner shapes."""
    return (
        first.batchable
        and other.batchable
        and other.servable is first.servable
        and other.signature is first.signature
        and other.shapes == first.shapes
    )


def _halves_of_one(item: Item) -> list[Item]:
    work, start, end = item
    middle = (start + end) // 2
    return [(work, start, middle), (work, middle, end)]
