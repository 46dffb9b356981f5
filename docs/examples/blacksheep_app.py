"""A BlackSheep app wrapped in closeguard. BlackSheep catches a handler's exception and sends
1011 with the exception's text: closeguard sends that 1011 with its own reason instead."""

from blacksheep import Application, WebSocket, WebSocketDisconnectError

from closeguard import WebSocketCloseMiddleware


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnectError:
        pass  # the client left, or closeguard closed with 1009


async def fail(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("a bug, with a secret in its text")  # the client gets 1011


blacksheep_app = Application()
blacksheep_app.router.add_ws("/ws/echo", echo)
blacksheep_app.router.add_ws("/ws/fail", fail)

app = WebSocketCloseMiddleware(blacksheep_app, max_message_size=4096)
