"""The connection protocol's own behaviour, driven in-process over a recording transport."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from jobs.serving.connections import ConnectionStats, protocol_class
from jobs.serving.limits import Limits

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

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _writes(protocol: type[H11Protocol], requests: int) -> list[bytes]:
    async def exchange() -> list[bytes]:
        config = uvicorn.Config(_app, http=protocol, lifespan="off", log_config=None)
        config.load()
        connection = protocol(config=config, server_state=ServerState(), app_state={})
        transport = Recording()
        connection.connection_made(transport)
        for _ in range(requests):
            connection.data_received(REQUEST)
            for _ in range(20):  # the app's task, then the flush
                await asyncio.sleep(0)
        connection.connection_lost(None)
        return transport.writes

    return asyncio.run(exchange())


def test_an_answer_is_one_write():
    """uvicorn's h11 protocol writes an answer's head and body apart (two sends, two packets);
    this server's writes each answer whole, in order, one per request."""
    assert _writes(H11Protocol, 1) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"]
    assert _writes(protocol_class(Limits(), ConnectionStats()), 2) == [ANSWER, ANSWER]
