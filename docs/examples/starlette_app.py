"""A Starlette app with closeguard mounted: a limit of 64 KiB per inbound message."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def fail(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("a bug, with a secret in its text")  # the client gets 1011


app = Starlette(
    routes=[WebSocketRoute("/ws/echo", echo), WebSocketRoute("/ws/fail", fail)],
    middleware=[Middleware(WebSocketCloseMiddleware, max_message_size=64 * 1024)],
)
