"""A Litestar app wrapped in closeguard, with the hook that lets a WebSocket's exception reach
closeguard (without it, Litestar closes with its own 4500 'Internal Server Error')."""

from typing import Any

from litestar import Litestar, WebSocket, websocket

from closeguard import WebSocketCloseMiddleware
from closeguard.integrations.litestar import reraise_websocket_exceptions


@websocket("/ws/echo")
async def echo(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    while True:
        await socket.send_text(await socket.receive_text())


@websocket("/ws/fail")
async def fail(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    raise RuntimeError("a bug, with a secret in its text")  # the client gets 1011


app = WebSocketCloseMiddleware(
    Litestar(route_handlers=[echo, fail], after_exception=[reraise_websocket_exceptions]),
    max_message_size=4096,
)
