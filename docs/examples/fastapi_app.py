"""A FastAPI app with closeguard mounted, every close record handed to a hook."""

from fastapi import FastAPI, WebSocket

from closeguard import CloseRecord, WebSocketCloseMiddleware

closed: list[CloseRecord] = []

app = FastAPI()
app.add_middleware(WebSocketCloseMiddleware, on_close=closed.append)


@app.websocket("/ws/hello")
async def hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    # returns without closing: closeguard sends 1000
