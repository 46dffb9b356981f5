"""chat.py: the app the testing page's tests test. It echoes text, and a few words end the
connection in each way there is. The app is made by a function, so a test can make it with
``reraise=False`` and with a hook that keeps each connection's close record."""

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import CloseRecord, WebSocketCloseMiddleware


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        if text == "bye":
            await websocket.close(1000, "goodbye")
            return  # closed: nothing more may be received or sent
        if text == "quit":
            return  # without closing: closeguard sends 1000
        if text == "boom":
            raise RuntimeError("a bug")  # closeguard sends 1011
        if text == "reserved":
            await websocket.close(1005)  # not sendable: closeguard raises InvalidCloseCode
        await websocket.send_text(text)


def create_app(
    *, reraise: bool = True, on_close: Callable[[CloseRecord], None] | None = None
) -> Starlette:
    guard = Middleware(
        WebSocketCloseMiddleware, max_message_size=1024, reraise=reraise, on_close=on_close
    )
    return Starlette(routes=[WebSocketRoute("/ws", chat)], middleware=[guard])


app = create_app()  # what a server runs: `uvicorn chat:app`
