"""Each ending of your app's WebSockets asserted in its own tests, with Starlette's TestClient
(FastAPI's is the same class).

The app is made by a function, so a test can make it with ``reraise=False``: the test then sees
what a browser sees, 1011 ``internal error``, where by default the app's own exception surfaces
in the test instead. ``on_close`` hands each connection's record to a list the test reads.
"""

from collections.abc import Callable

import pytest
from closeguard import CloseRecord, InvalidCloseCode, WebSocketCloseMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect


async def chat(websocket: WebSocket) -> None:
    """The app under test: echoes text; a few words end the connection in each way there is."""
    await websocket.accept()
    async for text in websocket.iter_text():
        if text == "bye":
            await websocket.close(1000, "goodbye")
        elif text == "quit":
            return  # without closing: closeguard sends 1000
        elif text == "boom":
            raise RuntimeError("a bug")  # closeguard sends 1011
        elif text == "reserved":
            await websocket.close(1005)  # not sendable: closeguard raises InvalidCloseCode
        else:
            await websocket.send_text(text)


def create_app(
    *, reraise: bool = True, on_close: Callable[[CloseRecord], None] | None = None
) -> Starlette:
    guard = Middleware(
        WebSocketCloseMiddleware, max_message_size=1024, reraise=reraise, on_close=on_close
    )
    return Starlette(routes=[WebSocketRoute("/ws", chat)], middleware=[guard])


app = create_app()


def close_after(text: str, records: list[CloseRecord]) -> WebSocketDisconnect:
    """Send ``text``; return the close the client got (a browser's CloseEvent says the same)."""
    with (
        TestClient(create_app(reraise=False, on_close=records.append)) as client,
        client.websocket_connect("/ws") as websocket,
    ):
        websocket.send_text(text)
        with pytest.raises(WebSocketDisconnect) as ended:
            websocket.receive_text()
    return ended.value


def test_a_normal_close() -> None:
    records: list[CloseRecord] = []
    closed = close_after("bye", records)
    assert (closed.code, closed.reason) == (1000, "goodbye")
    assert records[0].initiator == "app"


def test_an_exception_after_accept_is_1011() -> None:
    records: list[CloseRecord] = []
    closed = close_after("boom", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records[0].exception == "RuntimeError"


def test_an_invalid_close_is_rejected_with_1011() -> None:
    records: list[CloseRecord] = []
    closed = close_after("reserved", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert (records[0].requested_code, records[0].exception) == (
        1005,
        "closeguard.codes.InvalidCloseCode",
    )


def test_a_return_without_close_is_1000() -> None:
    records: list[CloseRecord] = []
    closed = close_after("quit", records)
    assert closed.code == 1000
    assert records[0].initiator == "middleware"


def test_an_oversized_message_is_1009() -> None:
    records: list[CloseRecord] = []
    closed = close_after("x" * 1025, records)
    assert (closed.code, closed.reason) == (1009, "message exceeds the limit of 1024 bytes")


def send_and_wait(client: TestClient, text: str) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text(text)
        websocket.receive_text()  # waits for the app: the close, or the app's exception


def test_by_default_the_app_s_own_exception_reaches_the_test() -> None:
    # reraise=True (the default), as in production: the server sees the exception, and so
    # does the test, as the connection's `with` block ends.
    with TestClient(create_app()) as client, pytest.raises(RuntimeError, match="a bug"):
        send_and_wait(client, "boom")
    with TestClient(create_app()) as client, pytest.raises(InvalidCloseCode, match="1005"):
        send_and_wait(client, "reserved")
