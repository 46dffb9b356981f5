"""Any ASGI app: wrap it. In "replace" mode an invalid close is replaced and logged."""

from starlette.types import Receive, Scope, Send

from closeguard import WebSocketCloseMiddleware


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1005})  # nobody may send 1005


app = WebSocketCloseMiddleware(raw_app, invalid_close="replace")  # the client gets 1000
