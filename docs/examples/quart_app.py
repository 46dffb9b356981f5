"""A Quart app with closeguard around its ``asgi_app``, and exceptions propagated (without
that, Quart ends a failed WebSocket with its own 1000)."""

from quart import Quart, websocket

from closeguard import WebSocketCloseMiddleware

app = Quart(__name__)
app.config["PROPAGATE_EXCEPTIONS"] = True  # to closeguard, instead of Quart's own close
# Quart wraps its asgi_app, not the app, in middleware (mypy: Quart declares it a method).
app.asgi_app = WebSocketCloseMiddleware(  # type: ignore[method-assign]
    app.asgi_app, max_message_size=4096
)


@app.websocket("/ws/echo")
async def echo() -> None:
    await websocket.accept()
    while True:
        await websocket.send(await websocket.receive())


@app.websocket("/ws/fail")
async def fail() -> None:
    await websocket.accept()
    raise RuntimeError("a bug, with a secret in its text")  # the client gets 1011
