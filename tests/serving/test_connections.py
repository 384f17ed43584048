"""The connection protocol's own behaviour, driven in-process over a recording transport."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from jobs.serving.connections import ConnectionStats, protocol_class
from jobs.serving.limits import MAX_HEAD_BYTES, Limits

REQUEST = b"GET /v1/models/m HTTP/1.1\r\nHost: a\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


class Recording(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        if data:  # as asyncio's socket transport, which sends nothing for b""
            self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8501)}.get(name, default)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _writes(protocol: type[HttpToolsProtocol], requests: int, request: bytes = REQUEST) -> list[bytes]:
    async def exchange() -> list[bytes]:
        config = uvicorn.Config(_app, http=protocol, lifespan="off", log_config=None)
        config.load()
        connection = protocol(config=config, server_state=ServerState(), app_state={})
        transport = Recording()
        connection.connection_made(transport)
        for _ in range(requests):
            connection.data_received(request)
            for _ in range(20):  # the app's task, then the flush
                await asyncio.sleep(0)
        connection.connection_lost(None)
        return transport.writes

    return asyncio.run(exchange())


def test_an_answer_is_one_write():
    """uvicorn's httptools protocol writes an answer's head and body apart (two sends, two
    packets); this server's writes each answer whole, in order, one per request."""
    assert _writes(HttpToolsProtocol, 1) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"]
    assert _writes(protocol_class(Limits(), ConnectionStats()), 2) == [ANSWER, ANSWER]


def test_a_request_head_over_the_limit_is_a_431_and_the_end():
    """uvicorn's httptools protocol keeps every header of a head of any size in memory (h11
    stopped at 16 KiB); this one answers 431 past MAX_HEAD_BYTES, stops reading and closes."""
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(MAX_HEAD_BYTES // 100))
    huge = b"GET /v1/models/m HTTP/1.1\r\nHost: a\r\n" + filler + b"\r\n"
    writes = _writes(protocol_class(Limits(), ConnectionStats()), 1, huge)
    assert len(writes) == 2 and writes[0].startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert writes[1] == b"<eof>"  # the answer, then the half-close: what the client sends is drained
    assert b"connection: close" in writes[0] and b'"error":"The request head is over the limit of' in writes[0]
    # a head just under the limit is answered as usual
    start = b"GET /v1/models/m HTTP/1.1\r\nHost: a\r\nX-Filler: "
    fitting = start + b"a" * (MAX_HEAD_BYTES - len(start) - 4) + b"\r\n\r\n"
    assert len(fitting) == MAX_HEAD_BYTES
    assert _writes(protocol_class(Limits(), ConnectionStats()), 1, fitting) == [ANSWER]


def test_requests_in_flight_are_counted_from_head_to_answer_on_every_connection():
    """What lets a lone request run on the event loop thread (app.requests_in_flight): heads
    received on two connections count at once, before either app runs; each answer, or a lost
    connection with its answer unsent, takes its request off."""
    stats = ConnectionStats()
    release = asyncio.Event()
    seen: list[int] = []

    async def app(scope, receive, send) -> None:
        seen.append(stats.requests)
        await release.wait()
        await _app(scope, receive, send)

    async def exchange() -> None:
        protocol = protocol_class(Limits(), stats)
        config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None)
        config.load()
        state = ServerState()
        first, second = (protocol(config=config, server_state=state, app_state={}) for _ in range(2))
        first.connection_made(Recording())
        second.connection_made(Recording())
        first.data_received(REQUEST)
        second.data_received(REQUEST)
        assert stats.requests == 2
        for _ in range(5):
            await asyncio.sleep(0)
        assert seen == [2, 2]
        second.connection_lost(ConnectionResetError())  # its client went before the answer
        assert stats.requests == 1
        release.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert stats.requests == 0
        first.data_received(REQUEST)
        for _ in range(20):
            await asyncio.sleep(0)
        assert seen[-1] == 1 and stats.requests == 0
        first.connection_lost(None)
        assert stats.requests == 0 and stats.open == 0

    asyncio.run(exchange())
