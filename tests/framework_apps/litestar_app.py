"""Litestar, mounted as docs/examples/litestar_app.py shows: the app wrapped, and the
``after_exception`` hook that lets a WebSocket's exception reach closeguard.

The app has a middleware of its own, as most do: Litestar then wraps each route in a second
exception middleware, and the exception must get through both."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from litestar import Litestar, WebSocket, websocket
from litestar.types import ASGIApp, Receive, Scope, Send

from closeguard import WebSocketCloseMiddleware
from closeguard.integrations.litestar import reraise_websocket_exceptions
from tests.framework_apps import IDLE_TIMEOUT, LIMIT, SECRET
from tests.record_log import write_records_to_test_log


@websocket("/close/{code:int}/{token:str}")
async def close_with(socket: WebSocket[Any, Any, Any], code: int, reason: str = "") -> None:
    await socket.accept()
    await socket.close(code, reason)


@websocket("/raise/{token:str}")
async def raise_after_accept(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    raise RuntimeError(SECRET)


@websocket("/return/{token:str}")
async def return_without_close(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.send_text("ready")


@websocket("/echo/{token:str}")
async def echo(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    while True:
        await socket.send_text(await socket.receive_text())


@websocket("/idle/{token:str}")
async def idle_echo(socket: WebSocket[Any, Any, Any]) -> None:
    """An echo under ``idle_timeout``: closeguard closes it, and Litestar's receive raises."""
    await socket.accept()
    while True:
        await socket.send_text(await socket.receive_text())


def idle_timeout(scope: MutableMapping[str, Any]) -> float | None:
    """A close policy on one route only, as a callable of the scope."""
    return IDLE_TIMEOUT if str(scope.get("path", "")).startswith("/idle/") else None


class PassThrough:
    """A Litestar middleware that does nothing: one in the app's list is enough."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


write_records_to_test_log()
app = WebSocketCloseMiddleware(
    Litestar(
        route_handlers=[close_with, raise_after_accept, return_without_close, echo, idle_echo],
        middleware=[PassThrough],
        after_exception=[reraise_websocket_exceptions],
    ),
    max_message_size=LIMIT,
    idle_timeout=idle_timeout,
)
