"""test_chat.py: each ending of chat.py's WebSocket asserted with Starlette's TestClient
(FastAPI's is the same class): the close the client got, and the connection's close record."""

import pytest
from chat import create_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from closeguard import InvalidCloseCode
from closeguard.testing import CloseRecords


@pytest.fixture
def records() -> CloseRecords:
    return CloseRecords()  # an on_close hook that keeps each connection's record


def close_after(text: str, records: CloseRecords) -> WebSocketDisconnect:
    """Send ``text``; return the close the client got (a browser's CloseEvent says the same)."""
    app = create_app(reraise=False, on_close=records)
    with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
        websocket.send_text(text)
        with pytest.raises(WebSocketDisconnect) as ended:
            websocket.receive_text()
    return ended.value


def test_a_normal_close(records: CloseRecords) -> None:
    closed = close_after("bye", records)
    assert (closed.code, closed.reason) == (1000, "goodbye")
    assert (records.one().initiator, records.one().exception) == ("app", None)


def test_an_exception_after_accept_is_1011(records: CloseRecords) -> None:
    closed = close_after("boom", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records.one().exception == "RuntimeError"


def test_an_invalid_close_is_rejected_with_1011(records: CloseRecords) -> None:
    closed = close_after("reserved", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records.one().requested_code == 1005
    assert records.one().exception == "closeguard.codes.InvalidCloseCode"


def test_a_return_without_close_is_1000(records: CloseRecords) -> None:
    closed = close_after("quit", records)
    assert closed.code == 1000
    assert records.one().initiator == "middleware"


def test_an_oversized_message_is_1009(records: CloseRecords) -> None:
    closed = close_after("x" * 1025, records)
    assert (closed.code, closed.reason) == (1009, "message exceeds the limit of 1024 bytes")
    assert records.one().bytes_received == 0  # the message never reached the app


def send_and_wait(client: TestClient, text: str) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text(text)
        websocket.receive_text()  # waits for the app: the close, or the app's exception


def test_by_default_the_app_s_own_exception_reaches_the_test(records: CloseRecords) -> None:
    # reraise=True (the default), as in production: the server sees the exception, and so
    # does the test, as the connection's `with` block ends. A normal close raises nothing.
    with TestClient(create_app(on_close=records)) as client:
        with pytest.raises(RuntimeError, match="a bug"):
            send_and_wait(client, "boom")
        with pytest.raises(InvalidCloseCode, match="1005"):
            send_and_wait(client, "reserved")
        with pytest.raises(WebSocketDisconnect):
            send_and_wait(client, "bye")
    assert [(record.code, record.exception) for record in records] == [
        (1011, "RuntimeError"),
        (1011, "closeguard.codes.InvalidCloseCode"),
        (1000, None),
    ]
