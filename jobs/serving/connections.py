"""Connections: uvicorn's httptools protocol with the bounds it lacks.

uvicorn closes a connection that is idle *after* a response (`timeout_keep_alive`), but not
one that never sends a byte, nor one that sends half a request head and stops (slowloris), and
it accepts any number of connections (`limit_concurrency` answers 503 per request, yet keeps
every connection open) and request heads of any size. So here:

- a new connection gets the keep-alive timeout too, until its first byte;
- a request head must be complete within `header_timeout` of the connection becoming ready
  for one (else 408 and close; a connection that sent nothing is just closed);
- a request head over MAX_HEAD_BYTES is answered 431 and the connection closed;
- past `max_connections` open connections a new one is answered 503 with Retry-After and
  closed;
- when the server closes a connection whose request body it has not read (an early 413, 503
  or 408), it first half-closes and reads and drops up to DRAIN_BYTES for up to DRAIN_SECONDS,
  as reverse proxies do (lingering close), so the client reads the answer instead of a reset.

The body's own time limit is the app's (it reads the body). The parser is httptools (llhttp,
in C): h11's pure-Python parser cost a fifth of the server's time per request (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobs.serving.app import LOST
from jobs.serving.errors import ApiError, overloaded, timed_out, too_large_head
from jobs.serving.limits import DRAIN_BYTES, DRAIN_SECONDS, MAX_HEAD_BYTES, RETRY_AFTER_SECONDS, Limits
from jobs.serving.response import encode_error

log = logging.getLogger("jobs.serve")


def raw_answer(error: ApiError) -> bytes:
    """A complete HTTP/1.1 answer for an error, written outside any request cycle."""
    from http import HTTPStatus

    body = encode_error(error.message)
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}", "content-type: application/json"]
    head += [f"{name}: {value}" for name, value in error.headers.items()]
    head += ["connection: close", f"content-length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


class ConnectionStats:
    def __init__(self):
        self.open = 0
        self.rejected = 0
        self.timed_out = 0
        self.requests = 0  # request heads received whose answer is not complete, on every connection


class _Transport:
    """The connection's transport, whose close() lets the client read the answer first, and
    whose writes within one turn of the event loop go out as one: uvicorn writes an answer's
    head and its body apart, which would cost two system calls, two packets and two wake-ups
    of the client for every answer."""

    def __init__(self, protocol: BoundedProtocol, transport: asyncio.Transport):
        self._protocol = protocol
        self._transport = transport
        self._pending: list[bytes] = []

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._protocol.loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._protocol.close_lingering()


def protocol_class(limits: Limits, stats: ConnectionStats) -> type[HttpToolsProtocol]:
    """A protocol class for uvicorn (`Config(http=...)`) holding `limits`."""
    return type("BoundedProtocol", (BoundedProtocol,), {"limits": limits, "stats": stats})


class BoundedProtocol(HttpToolsProtocol):
    limits: Limits
    stats: ConnectionStats

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._rejected = len(self.connections) >= self.limits.max_connections
        self._lingering = False
        self._lost = False
        self._drained = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._reading_head = True  # ready for a request head, or reading one
        self._head_bytes = 0  # bytes received since
        self._heads = 0  # request heads complete so far
        self._in_message = False  # a request begun whose body has not all been read
        self._head_size = 0  # bytes of the request head's target and headers so far
        self._requests = 0  # heads received on this connection whose answer is not complete
        if self._rejected:
            self.stats.rejected += 1
            self.transport = transport
            limit = self.limits.max_connections
            error = overloaded(f"Too many connections (limit {limit}); retry later", RETRY_AFTER_SECONDS)
            transport.write(raw_answer(error))
            self._start_lingering()
            return
        self.stats.open += 1
        self._lost_future = self.loop.create_future()  # set when the connection is lost: see app.LOST
        super().connection_made(_Transport(self, transport))  # type: ignore[arg-type]
        # uvicorn arms its keep-alive timer only after a response: a silent new connection too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timers()
        if self._rejected:
            return
        self.stats.open -= 1
        self.stats.requests -= self._requests
        self._requests = 0
        if not self._lost_future.done():
            self._lost_future.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._rejected:
            self._drained += len(data)
            if self._drained > DRAIN_BYTES:
                self._raw.close()
            return
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()  # a head that goes on and on

    def _refuse_head(self) -> None:
        if self._lingering or self._raw.is_closing():
            return
        self._raw.write(raw_answer(too_large_head(MAX_HEAD_BYTES)))
        self.close_lingering()

    # Parser callbacks (httptools calls them from data_received).

    def on_message_begin(self) -> None:
        self._in_message = True
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size <= MAX_HEAD_BYTES:  # past it, nothing more is kept
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_size > MAX_HEAD_BYTES or self._lingering:
            self._refuse_head()  # a whole head over the limit in one read: no request
            return
        self._heads += 1
        if self._head_timer is not None:
            self._head_timer.cancel()  # a request head arrived
            self._head_timer = None
        self.scope[LOST] = self._lost_future  # before the app's task starts
        self._requests += 1
        self.stats.requests += 1
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._lingering:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._reading_head, self._head_bytes = True, 0  # what follows is the next request's head
        if not self._lingering:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        self._requests -= 1
        self.stats.requests -= 1
        super().on_response_complete()
        if not self._lingering and not self._raw.is_closing():
            self._arm_head_timer()

    # Timers and lingering close.

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out, self._heads)

    def _head_timed_out(self, heads: int) -> None:
        self._head_timer = None
        if self._lingering or self._raw.is_closing() or self._heads != heads or not self._reading_head:
            return
        self.stats.timed_out += 1
        if self._head_bytes:  # part of a head came: say why the connection ends
            limit = self.limits.header_timeout
            self._raw.write(raw_answer(timed_out(f"The request head did not arrive within {limit:g} s")))
        self._raw.close()

    def close_lingering(self) -> None:
        """Closes; if the client may still be sending a request we did not read, half-closes
        first and reads and drops what comes, within bounds."""
        if self._lingering:
            return
        if not self._lost and (self._in_message or self._reading_head and self._head_bytes):
            self._start_lingering()
            return
        self._cancel_timers()
        self._raw.close()

    def _start_lingering(self) -> None:
        self._lingering = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._unset_keepalive_if_required()
        if isinstance(self.transport, _Transport):
            self.transport.flush()  # the answer before the half-close
        if self._raw.can_write_eof():
            self._raw.write_eof()
        self._raw.resume_reading()
        self._linger_timer = self.loop.call_later(DRAIN_SECONDS, self._raw.close)

    def eof_received(self) -> bool | None:
        if self._lingering or self._rejected:
            self._raw.close()
        return None

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger_timer = None
