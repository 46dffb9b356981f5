"""Shared test machinery: a real uvicorn on 127.0.0.1, a real client, and a record collector."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import pytest
import uvicorn
from starlette.types import ASGIApp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from closeguard import CloseRecord

#: uvicorn's three WebSocket implementations; every wire test runs under each.
UVICORN_WS_IMPLEMENTATIONS = ("websockets", "websockets-sansio", "wsproto")


class Records(list[CloseRecord]):
    """An ``on_close`` hook that keeps what it is given (appends are atomic across threads)."""

    def __call__(self, record: CloseRecord) -> None:
        self.append(record)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CloseRecord]:
        deadline = time.monotonic() + timeout
        while len(self) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self)


@pytest.fixture
def records() -> Records:
    return Records()


@contextmanager
def serve(app: ASGIApp, ws: str, **config: object) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 at an ephemeral port; yield its ws:// base URL.

    On exit the server shuts down and every connection task has ended, so what was recorded
    is all that will ever be recorded.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings: dict[str, object] = {
        "ws": ws,
        "lifespan": "off",
        "log_config": None,
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
    }
    settings.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **settings))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start within 10 s"
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 15 s"


@pytest.fixture(params=UVICORN_WS_IMPLEMENTATIONS)
def ws_impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


ServerFactory = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def server(ws_impl: str) -> ServerFactory:
    """``with server(app) as url:`` runs ``app`` under this test's uvicorn implementation."""

    def start(app: ASGIApp, **config: object) -> AbstractContextManager[str]:
        return serve(app, ws_impl, **config)

    return start


@dataclass(frozen=True)
class Seen:
    """What the client saw: an HTTP refusal, or the Close frame it received (None: none came)."""

    status: int | None = None
    code: int | None = None
    reason: str | None = None
    messages: tuple[str | bytes, ...] = ()

    @property
    def close(self) -> tuple[int, str] | None:
        return None if self.code is None else (self.code, self.reason or "")


async def talk(
    url: str,
    send: tuple[str | bytes, ...] = (),
    *,
    close: tuple[int, str] | None = None,
    expect_replies: int = 0,
    timeout: float = 5.0,
    origin: str | None = None,
) -> Seen:
    """Connect with the ``websockets`` client, send, optionally close, and read to the end.

    ``origin``: the Origin header a browser would send (the client sends none by default).
    """
    messages: list[str | bytes] = []
    try:
        async with connect(
            url,
            open_timeout=timeout,
            close_timeout=timeout,
            max_size=None,
            origin=None if origin is None else Origin(origin),
        ) as ws:
            for message in send:
                await ws.send(message)
            for _ in range(expect_replies):
                messages.append(await asyncio.wait_for(ws.recv(), timeout))
            if close is not None:
                await ws.close(*close)
            while True:
                messages.append(await asyncio.wait_for(ws.recv(), timeout))
    except InvalidStatus as exc:
        return Seen(status=exc.response.status_code)
    except ConnectionClosed as exc:
        received = exc.rcvd
        if received is None:
            return Seen(messages=tuple(messages))
        return Seen(code=received.code, reason=received.reason, messages=tuple(messages))
    raise AssertionError("unreachable: the loop only ends by an exception")
