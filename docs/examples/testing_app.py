"""Test your app's closes in process, with Starlette's TestClient (FastAPI's is the same)."""

import pytest
from closeguard import WebSocketCloseMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from starlette_app import app, fail


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


def test_with_reraise_false_the_client_sees_1011() -> None:
    quiet = Starlette(
        routes=[WebSocketRoute("/ws/fail", fail)],
        middleware=[Middleware(WebSocketCloseMiddleware, reraise=False)],
    )
    with (
        TestClient(quiet) as client,
        client.websocket_connect("/ws/fail") as websocket,
        pytest.raises(WebSocketDisconnect) as ended,
    ):
        websocket.receive_text()
    assert (ended.value.code, ended.value.reason) == (1011, "internal error")
