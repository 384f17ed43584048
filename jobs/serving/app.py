"""The ASGI app: TF Serving's REST API over HTTP, each request within its limits.

    GET     /v1/models/<name>[/versions/<N>|/labels/<L>]             model_version_status
    GET     /v1/models/<name>[/versions/<N>|/labels/<L>]/metadata    signature defs
    POST    /v1/models/<name>[/versions/<N>|/labels/<L>]:predict     {"instances"|"inputs": ...}
    POST    ...:classify, ...:regress                                {"examples": [...]}
    OPTIONS /v1/...                                                  CORS preflight
    any     /monitoring/prometheus/metrics                           Prometheus text format

As TF Serving's REST server does (model_servers/http_server.cc, 2.20.0): every /v1 answer is
JSON with `Content-Type: application/json`; with `cors` every /v1 answer carries its three CORS
headers; a preflight (OPTIONS) is answered 200 with an empty body when its `Origin` names an
http(s) origin, else 400; each /v1 request counts in `request_count` under its model name
(empty when the path did not parse) and its status code's name, and an OK one in
`request_latency`.

A POST's body is read within `body_timeout` and `max_body_bytes` (and the bytes of all bodies
being held within `max_inflight_body_bytes`), parsed within the JSON limits, checked against
the pixel limits from the image headers, and queued as work (a full queue is a 503). The answer
is awaited until `request_timeout` (504); if the client disconnects first (the protocol in
connections.py tells through the scope's LOST future), what is left of its work is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from jobs.serving import routes
from jobs.serving.api import Api, Call
from jobs.serving.batching import Scheduler
from jobs.serving.errors import INTERNAL, ApiError, deadline_exceeded, overloaded, timed_out, too_large
from jobs.serving.limits import CHUNK_PIXELS, RETRY_AFTER_SECONDS, Limits
from jobs.serving.metrics import CONTENT_TYPE, Metrics
from jobs.serving.modelconfig import ModelConfig
from jobs.serving.models import Models, loader_with
from jobs.serving.response import encode_error
from jobs.serving.signals import Predicted, PredictionLog, Signals, request_id
from jobs.serving.versions import DEFAULT_LOAD_RETRIES, DEFAULT_LOAD_RETRY_SECONDS, Retries
from jobs.serving.warmup import Outcome
from jobs.serving.warmup import run as warm_up

log = logging.getLogger("jobs.serve")

JSON = b"application/json"
LOST = "fmnist.connection_lost"  # scope key: a future done when the client's connection is lost
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]
ORIGIN = re.compile(rb"https?://")


@dataclasses.dataclass(frozen=True)
class Settings:
    models: tuple[ModelConfig, ...] = ()  # --model_name/--model_base_path's one model
    model_config_file: Path | None = None  # read at every poll instead, when given
    poll_seconds: float = 1.0
    max_batch: int = 64
    threads: int = 2
    limits: Limits = Limits()
    load_retries: int = DEFAULT_LOAD_RETRIES
    load_retry_seconds: float = DEFAULT_LOAD_RETRY_SECONDS
    cors: bool = False  # TF Serving's --rest_api_enable_cors_support
    prediction_log: PredictionLog | None = None  # the sampled prediction log, when on


class ClientGone(Exception):
    """The client disconnected before its answer."""


class App:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.limits = settings.limits
        self.signals = Signals()
        self.metrics = Metrics(self.signals)
        self.prediction_log = settings.prediction_log
        loader = loader_with(lambda path, ok, seconds: self.metrics.load(str(path), ok, seconds), self._warm_up)
        self.models = Models(
            loader,
            settings.poll_seconds,
            settings.model_config_file,
            settings.models,
            Retries(settings.load_retries, settings.load_retry_seconds),
        )
        self.api = Api(self.models, self.limits)
        self.scheduler: Scheduler | None = None
        self.body_bytes = 0  # bytes of request bodies being received or held
        # Requests whose head has arrived and whose answer has not gone, when the server counts
        # them (connections.py): a request alone may run on the event loop thread.
        self.requests_in_flight: Callable[[], int] | None = None

    def _warm_up(self, servable) -> None:
        def report(outcome: Outcome) -> None:
            self.metrics.warmup(str(servable.path), outcome.status, outcome.records, outcome.seconds)

        records = warm_up(servable, report)
        if records:
            log.info("warmed up version %d with %d request(s) from its warm-up file", servable.version, records)

    # ASGI entry points.

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.scheduler = Scheduler(
                    self.settings.threads,
                    self.settings.max_batch,
                    CHUNK_PIXELS,
                    self.limits.max_queued_pixels,
                    on_batch=self.metrics.batch,
                )
                self.models.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.models.stop()
                if self.scheduler is not None:
                    self.scheduler.close()
                if self.prediction_log is not None:
                    self.prediction_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        route: routes.Route | None = None
        code, status, headers, body = "OK", 200, [(b"content-type", JSON)], b""
        logged: Logged | None = None
        try:
            route = routes.route(method, path)
            if route.api == "metrics":
                headers = [(b"content-type", CONTENT_TYPE.encode("latin-1"))]
                body = self.metrics.page()
            elif route.api == "options":
                headers = []
                self._preflight(scope)
            elif route.api == "status":
                body = self.api.status(route)
            elif route.api == "metadata":
                body = self.api.metadata(route)
            else:
                body, logged = await self._call(route, scope, receive)
                if logged is not None:
                    headers.append((b"x-request-id", logged.request.encode("ascii")))
        except ApiError as err:
            code, status, body = err.code, err.status, encode_error(err.message)
            if route is None or route.api == "options":
                headers = [(b"content-type", JSON)]
            headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
            if err.close:
                headers.append((b"connection", b"close"))
        except ClientGone:
            self.metrics.drop("gone")
            self._count(route, path, "CANCELLED", started)
            return
        except Exception:  # a fault of the server: logged with its trace, answered without it
            log.exception("%s %s failed", method, path[:200])
            code, status, body = "INTERNAL", 500, encode_error(INTERNAL)
        if self.settings.cors and routes.API_RE.fullmatch(path):
            headers += CORS_HEADERS
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._count(route, path, code, started)
        if logged is not None:
            logged.write(self.prediction_log, time.perf_counter() - started)

    def _count(self, route: routes.Route | None, path: str, code: str, started: float) -> None:
        """TF Serving's request_count and request_latency for a /v1 request (any other path
        never reaches its REST handler)."""
        if not routes.API_RE.fullmatch(path):
            return
        model, verb = (route.model, route.verb) if route is not None else ("", "")
        self.metrics.request(model, code, verb, time.perf_counter() - started)

    @staticmethod
    def _preflight(scope) -> None:
        origin = next((value for name, value in scope["headers"] if name == b"origin"), b"")
        if not ORIGIN.search(origin):
            raise ApiError("FAILED_PRECONDITION", "Origin header is missing in CORS preflight")

    # POST calls.

    async def _call(self, route: routes.Route, scope, receive) -> tuple[bytes, Logged | None]:
        declared = _content_length(scope)
        with self._holding(declared or 0) as hold:
            body = await self._read_body(receive, declared, hold)
            call = self.api.prepare(route, body)
            del body
            try:
                assert self.scheduler is not None
                started = time.perf_counter()
                try:
                    # Alone, a small work runs at once on this thread (batching.Scheduler.submit).
                    alone = self.requests_in_flight is not None and self.requests_in_flight() == 1
                    future = self.scheduler.submit(call.work, alone)
                except ApiError:
                    self.metrics.drop("queue_full")
                    raise
                outputs = future.result() if future.done() else await self._answer(call, future, scope)
                self.metrics.runtime(route.model, route.api, time.perf_counter() - started)
            finally:
                call.servable.release()
        answer = call.finish(outputs)
        predicted = self.signals.observe(route.model, call.servable, call.work.signature, outputs)
        logged = None
        if self.prediction_log is not None and self.prediction_log.sampled():
            request = request_id(scope["headers"])
            logged = Logged(request, route.model, call.servable.version, predicted, call.work.size)
        return answer, logged

    async def _answer(self, call: Call, future, scope):
        """The work's outputs; drops the work if its client goes or its deadline passes.

        Neither watch costs a task or a loop iteration: a timer and the connection's own
        "lost" future (set by the protocol, connections.py) cancel the awaited answer."""
        work = call.work
        answer = asyncio.wrap_future(future)
        why: list[str] = []

        def stop(reason: str) -> None:
            if not answer.done():
                why.append(reason)
                answer.cancel()

        timer = asyncio.get_running_loop().call_later(max(0.0, work.deadline - time.monotonic()), stop, "deadline")
        lost = scope.get(LOST)

        def gone(_) -> None:
            stop("gone")

        if lost is not None:
            lost.add_done_callback(gone)
        try:
            return await answer
        except asyncio.CancelledError:
            if not why:
                raise  # this task itself was cancelled
            asyncio.current_task().uncancel()
            assert self.scheduler is not None
            self.scheduler.cancel(work)
            if why[0] == "gone":
                raise ClientGone() from None
            self.metrics.drop("deadline")
            raise deadline_exceeded(work.timeout) from None
        finally:
            timer.cancel()
            if lost is not None:
                lost.remove_done_callback(gone)

    @contextlib.contextmanager
    def _holding(self, size: int):
        """Counts `size` (and what `hold` adds) against max_inflight_body_bytes until the end."""
        limit = self.limits.max_inflight_body_bytes
        held = [0]

        def hold(more: int) -> None:
            if self.body_bytes + more > limit and self.body_bytes > 0:
                self.metrics.drop("body_bytes")
                raise overloaded(
                    f"The server is busy: {self.body_bytes} bytes of request bodies are being held "
                    f"(limit {limit}); retry later",
                    RETRY_AFTER_SECONDS,
                    close=True,  # its body is not read
                )
            self.body_bytes += more
            held[0] += more

        hold(size)
        try:
            yield hold
        finally:
            self.body_bytes -= held[0]

    async def _read_body(self, receive, declared: int | None, hold) -> bytes:
        limit, timeout = self.limits.max_body_bytes, self.limits.body_timeout
        if declared is not None and declared > limit:
            raise too_large(f"Request body of {declared} bytes is over the limit of {limit} bytes")
        task = asyncio.current_task()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, expire)  # one timer, not a task per chunk
        chunks, size, more = [], 0, True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large(f"Request body of more than {limit} bytes is over the limit")
                if declared is None:
                    hold(len(chunk))
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            raise timed_out(f"The request body did not arrive within {timeout:g} s") from None
        finally:
            timer.cancel()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclasses.dataclass(frozen=True)
class Logged:
    """A sampled request's line(s) for the prediction log, written once its answer is sent."""

    request: str
    model: str
    version: int
    predicted: Predicted | None
    count: int

    def write(self, log: PredictionLog, seconds: float) -> None:
        log.write(self.request, self.model, self.version, self.predicted, self.count, seconds)


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise ApiError("INVALID_ARGUMENT", "Content-Length is not a number", close=True)
            return int(value)
    return None


def create_app(settings: Settings) -> App:
    return App(settings)
