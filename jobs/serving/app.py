"""The ASGI app: TF Serving's REST paths answered with JSON, each request within its limits.

    GET  /v1/models/<name>[/versions/<N>]              model_version_status
    GET  /v1/models/<name>[/versions/<N>]/metadata     signature defs
    POST /v1/models/<name>[/versions/<N>]:predict      {"instances": ...} or {"inputs": ...}
    GET  /monitoring/prometheus/metrics                Prometheus text format

A predict request's body is read within `body_timeout` and `max_body_bytes` (and the bytes
of all bodies being held within `max_inflight_body_bytes`), parsed within the JSON limits,
checked against the pixel limits from the image headers, and queued as work (a full queue
is a 503). The answer is awaited until `request_timeout` (504); if the client disconnects
first (the protocol in connections.py tells through the scope's LOST future), what is left
of its work is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from jobs.serving import jsonbody, routes
from jobs.serving.batching import Scheduler, Work
from jobs.serving.errors import INTERNAL, ApiError, bad_request, deadline_exceeded, not_found, overloaded
from jobs.serving.limits import CHUNK_PIXELS, RETRY_AFTER_SECONDS, Limits
from jobs.serving.metrics import Metrics
from jobs.serving.request import decode_predict
from jobs.serving.response import encode_error, encode_predict
from jobs.serving.versions import DEFAULT_LOAD_RETRIES, DEFAULT_LOAD_RETRY_SECONDS, ModelManager

log = logging.getLogger("jobs.serve")

JSON = b"application/json"
LOST = "fmnist.connection_lost"  # scope key: a future done when the client's connection is lost


@dataclasses.dataclass(frozen=True)
class Settings:
    model_name: str
    base_path: Path
    poll_seconds: float = 1.0
    max_batch: int = 64
    threads: int = 2
    limits: Limits = Limits()
    load_retries: int = DEFAULT_LOAD_RETRIES
    load_retry_seconds: float = DEFAULT_LOAD_RETRY_SECONDS
    model_config_file: Path | None = None  # its `specific` versions pin what is served


class ClientGone(Exception):
    """The client disconnected before its answer."""


class App:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.limits = settings.limits
        self.metrics = Metrics(settings.model_name)
        self.manager = ModelManager(
            settings.model_name,
            settings.base_path,
            settings.poll_seconds,
            self.metrics.changed,
            settings.load_retries,
            settings.load_retry_seconds,
            pins=self._pins,
        )
        self.scheduler: Scheduler | None = None
        self.body_bytes = 0  # bytes of request bodies being received or held

    def _pins(self) -> tuple[int, ...] | None:
        if self.settings.model_config_file is None:
            return None
        from jobs.core import serving_config

        return serving_config.pinned(self.settings.model_config_file, self.settings.model_name)

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
                    on_batch=self.metrics.batch.observe,
                )
                self.manager.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.manager.stop()
                if self.scheduler is not None:
                    self.scheduler.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        api, status, headers = "other", 200, [(b"content-type", JSON)]
        try:
            route = routes.route(method, path)
            api = route.api
            if api == "predict":
                body = await self._predict(route, scope, receive)
            elif api == "metrics":
                body, kind = self.metrics.page()
                headers = [(b"content-type", kind.encode("latin-1"))]
            elif api == "metadata":
                body = jsonbody.dumps(self._metadata(route))
            else:
                body = jsonbody.dumps(self._status(route))
        except ApiError as err:
            status, body = err.status, encode_error(err.message)
            headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
            if err.close:
                headers.append((b"connection", b"close"))
        except ClientGone:
            self.metrics.dropped.labels("gone").inc()
            self.metrics.observe(api, 499, time.perf_counter() - started)
            return
        except Exception:  # a fault of the server: logged with its trace, answered without it
            log.exception("%s %s failed", method, path[:200])
            status, body = 500, encode_error(INTERNAL)
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(api, status, time.perf_counter() - started)

    # The APIs.

    def _status(self, route: routes.Route) -> dict:
        if not route.model:
            raise bad_request("Missing model name in request.")
        if route.model != self.settings.model_name:
            raise not_found(f"Could not find any versions of model {route.model}")
        self._no_labels(route)
        return self.manager.status(route.version)

    def _metadata(self, route: routes.Route) -> dict:
        if route.model != self.settings.model_name:
            raise not_found(f"Servable not found for request: Latest({route.model})")
        self._no_labels(route)
        servable = self.manager.acquire(route.version)
        try:
            spec = {"name": route.model, "signature_name": "", "version": str(servable.version)}
            return {"model_spec": spec, "metadata": servable.metadata}
        finally:
            servable.release()

    def _no_labels(self, route: routes.Route) -> None:
        if route.label is not None:
            raise not_found(f"Unrecognized servable version label: {route.label[:100]} (this server has no labels)")

    async def _predict(self, route: routes.Route, scope, receive) -> bytes:
        if route.model != self.settings.model_name:
            spec = f"Latest({route.model})" if route.version is None else f"Specific({route.model}, {route.version})"
            raise not_found(f"Servable not found for request: {spec}")
        self._no_labels(route)
        declared = _content_length(scope)
        with self._holding(declared or 0) as hold:
            body = await self._read_body(receive, declared, hold)
            servable = self.manager.acquire(route.version)
            try:
                payload = jsonbody.parse(body, self.limits.max_json_containers, self.limits.max_json_values)
                del body
                request = decode_predict(payload, servable.signatures, self.limits)
                del payload
                timeout = self.limits.request_timeout
                work = Work(
                    servable,
                    request.signature,
                    request.inputs,
                    request.costs,
                    request.where,
                    time.monotonic() + timeout,
                    timeout,
                )
                assert self.scheduler is not None
                try:
                    future = self.scheduler.submit(work)
                except ApiError:
                    self.metrics.dropped.labels("queue_full").inc()
                    raise
                outputs = await self._answer(work, future, scope)
            finally:
                servable.release()
        self.metrics.instances.inc(request.size)
        return encode_predict(outputs, request.row_format)

    async def _answer(self, work: Work, future, scope):
        """The work's outputs; drops the work if its client goes or its deadline passes.

        Neither watch costs a task or a loop iteration: a timer and the connection's own
        "lost" future (set by the protocol, connections.py) cancel the awaited answer."""
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
            self.metrics.dropped.labels("deadline").inc()
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
                self.metrics.dropped.labels("body_bytes").inc()
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
            raise ApiError(413, f"Request body of {declared} bytes is over the limit of {limit} bytes", close=True)
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
                    raise ApiError(413, f"Request body of more than {limit} bytes is over the limit", close=True)
                if declared is None:
                    hold(len(chunk))
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            raise ApiError(408, f"The request body did not arrive within {timeout:g} s", close=True) from None
        finally:
            timer.cancel()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise ApiError(400, "Content-Length is not a number", close=True)
            return int(value)
    return None


def create_app(settings: Settings) -> App:
    return App(settings)
