"""Test your app's closes in process, with Starlette's TestClient (FastAPI's is the same)."""

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from starlette_app import app


def test_an_oversized_message_ends_in_1009() -> None:
    with TestClient(app) as client, client.websocket_connect("/ws/echo") as websocket:
        websocket.send_text("x" * (64 * 1024 + 1))
        with pytest.raises(WebSocketDisconnect) as ended:
            websocket.receive_text()
    assert ended.value.code == 1009
    assert ended.value.reason == "message exceeds the limit of 65536 bytes"


def test_an_exception_after_accept_reaches_the_test() -> None:
    # With reraise=True (the default) the app's own exception surfaces in the test.
    with (
        TestClient(app) as client,
        pytest.raises(RuntimeError, match="a bug"),
        client.websocket_connect("/ws/fail") as websocket,
    ):
        websocket.receive_text()
