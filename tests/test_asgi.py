"""The middleware at the ASGI boundary, in process: tiny raw apps and Starlette apps.

The fake server (:mod:`tests.fake_server`) plays a scripted client and keeps every frame
closeguard puts on its wire; this is the fast layer. What a real client sees is in test_wire.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from middleware import (
    CloseAlreadySent,
    CloseRecord,
    InvalidCloseCode,
    WebSocketCloseMiddleware,
    connection_id,
)
from tests.fake_server import FakeServer, websocket_scope
from tests.fuzz_support import ClientBytes, ClientClose, ClientDrop, ClientEvent, ClientText


def scope(path: str = "/ws") -> Scope:
    # A query string with a secret in it: it must never reach the log.
    return websocket_scope(path, query_string=b"token=secret")


async def run(
    app: ASGIApp,
    server: FakeServer,
    path: str = "/ws",
    **options: Any,
) -> tuple[list[CloseRecord], BaseException | None]:
    """Run ``app`` behind closeguard once; return the records and what escaped, if anything."""
    records: list[CloseRecord] = []
    guarded = WebSocketCloseMiddleware(app, on_close=records.append, **options)
    try:
        await asyncio.wait_for(guarded(scope(path), server.receive, server.send), timeout=5)
    except Exception as exc:
        return records, exc
    return records, None


def raw(*steps: Callable[[Receive, Send], Awaitable[None]]) -> ASGIApp:
    """A raw ASGI app that reads the connect event, then runs ``steps`` in order."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        for step in steps:
            await step(receive, send)

    return app


def sends(message: Message) -> Callable[[Receive, Send], Awaitable[None]]:
    async def step(receive: Receive, send: Send) -> None:
        await send(message)

    return step


async def receives(receive: Receive, send: Send) -> None:
    await receive()


async def raises(receive: Receive, send: Send) -> None:
    raise RuntimeError("boom: password=hunter2")


ACCEPT = sends({"type": "websocket.accept"})


# Pass-through -------------------------------------------------------------------------------


@pytest.mark.parametrize("scope_type", ["http", "lifespan"])
async def test_other_scopes_reach_the_app_untouched(scope_type: str) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        pass

    original = {"type": scope_type}
    await WebSocketCloseMiddleware(app)(original, receive, send)
    assert seen == [(original, receive, send)]
    assert seen[0][0] is original
    assert seen[0][1] is receive
    assert seen[0][2] is send


# Closes ------------------------------------------------------------------------------------


async def test_valid_close_passes_and_is_recorded() -> None:
    server = FakeServer()
    records, escaped = await run(
        raw(ACCEPT, sends({"type": "websocket.close", "code": 4000, "reason": "bye"})), server
    )
    assert escaped is None
    assert server.closes == [(4000, "bye")]
    [record] = records
    assert (record.code, record.reason, record.initiator, record.path) == (
        4000,
        "bye",
        "app",
        "/ws",
    )
    assert record.client == "127.0.0.1:5000"


async def test_invalid_close_raises_out_of_send_and_nothing_reaches_the_server() -> None:
    caught: list[BaseException] = []

    async def try_1005(receive: Receive, send: Send) -> None:
        try:
            await send({"type": "websocket.close", "code": 1005})
        except InvalidCloseCode as exc:
            caught.append(exc)

    server = FakeServer()
    records, escaped = await run(raw(ACCEPT, try_1005), server)
    assert escaped is None
    assert "close code 1005 is reserved for local use" in str(caught[0])
    # The app returned without a valid close: closeguard closed it with 1000.
    assert server.closes == [(1000, "")]
    assert records[0].requested_code == 1005


async def test_invalid_close_left_unhandled_becomes_1011_and_propagates() -> None:
    server = FakeServer()
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": 999}))
    records, escaped = await run(app, server)
    assert isinstance(escaped, InvalidCloseCode)
    assert server.closes == [(1011, "internal error")]
    assert (records[0].requested_code, records[0].exception) == (
        999,
        "middleware.codes.InvalidCloseCode",
    )


async def test_replace_mode_sends_the_substitute() -> None:
    server = FakeServer()
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": 1015, "reason": "é" * 70}))
    records, escaped = await run(app, server, invalid_close="replace")
    assert escaped is None
    assert server.closes == [(1011, "é" * 61)]
    assert records[0].requested_code == 1015


async def test_send_after_close_raises_and_reaches_nobody() -> None:
    server = FakeServer()
    app = raw(
        ACCEPT,
        sends({"type": "websocket.close", "code": 1000}),
        sends({"type": "websocket.send", "text": "late"}),
    )
    records, escaped = await run(app, server)
    assert isinstance(escaped, CloseAlreadySent)
    assert isinstance(escaped, RuntimeError)
    assert [frame.kind for frame in server.wire] == ["accept", "close"]
    assert (records[0].code, records[0].exception) == (
        1000,
        "middleware.connection.CloseAlreadySent",
    )


# Exceptions --------------------------------------------------------------------------------


async def test_exception_after_accept_sends_1011_records_and_reraises() -> None:
    server = FakeServer()
    records, escaped = await run(raw(ACCEPT, raises), server)
    assert isinstance(escaped, RuntimeError)
    assert server.closes == [(1011, "internal error")]
    assert records[0].exception == "RuntimeError"


async def test_reraise_off_swallows_after_the_1011(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    with caplog.at_level(logging.INFO, logger="closeguard"):
        _records, escaped = await run(raw(ACCEPT, raises), server, reraise=False)
    assert escaped is None
    assert server.closes == [(1011, "internal error")]
    [log] = [r for r in caplog.records if r.name == "closeguard"]
    assert log.levelno == logging.ERROR
    assert log.exc_info is not None  # the one traceback, since the server never sees it


async def test_exception_before_accept_sends_nothing() -> None:
    server = FakeServer()
    records, escaped = await run(raw(raises), server)
    assert isinstance(escaped, RuntimeError)
    assert server.wire == []
    assert (records[0].accepted, records[0].code) == (False, None)


async def test_cancellation_sends_nothing_and_is_recorded() -> None:
    records: list[CloseRecord] = []
    server = FakeServer(idle="wait")  # a quiet client: the app's receive waits
    guarded = WebSocketCloseMiddleware(raw(ACCEPT, receives), on_close=records.append)
    task = asyncio.ensure_future(guarded(scope(), server.receive, server.send))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.closes == []
    assert records[0].exception == "asyncio.exceptions.CancelledError"


async def test_transport_gone_while_sending_is_the_clients_end() -> None:
    server = FakeServer([ClientEvent(3, ClientDrop())])  # gone just before the app's send
    records, escaped = await run(
        raw(ACCEPT, sends({"type": "websocket.send", "text": "x"})), server
    )
    assert escaped is None  # the server's "peer is gone" error is an ordinary end
    assert (records[0].code, records[0].initiator) == (1006, "client")


# Inbound size ------------------------------------------------------------------------------


async def echo_until_disconnect(receive: Receive, send: Send) -> None:
    for _ in range(100):
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text")})


@pytest.mark.parametrize(
    ("text", "too_big"),
    [("a" * 10, False), ("a" * 11, True), ("é" * 5, False), ("é" * 6, True), ("😀😀", False)],
)
async def test_the_limit_is_in_utf8_bytes(text: str, too_big: bool) -> None:
    server = FakeServer([ClientText(text), ClientClose(1000)])
    records, _ = await run(raw(ACCEPT, echo_until_disconnect), server, max_message_size=10)
    if too_big:
        assert server.closes == [(1009, "message exceeds the limit of 10 bytes")]
        assert records[0].messages_received == 0
    else:
        assert [frame.data for frame in server.wire if frame.kind == "text"] == [text]
        assert records[0].messages_received == 1


@pytest.mark.parametrize(
    ("text", "too_big"),
    [
        ("é" * 400, False),  # 800 bytes: more characters than a quarter of the limit, fits
        ("😀" * 300, True),  # 300 characters, 1200 bytes
        ("€" * 334, True),  # 1002 bytes
        ("€" * 333, False),  # 999 bytes
    ],
)
async def test_text_near_the_limit_is_measured_in_utf8(text: str, too_big: bool) -> None:
    server = FakeServer([ClientText(text), ClientClose(1000)])
    records, _ = await run(raw(ACCEPT, echo_until_disconnect), server, max_message_size=1000)
    if too_big:
        assert server.closes == [(1009, "message exceeds the limit of 1000 bytes")]
    else:
        assert server.closes == []
        # Counted in characters, as documented: text is never encoded just to count it.
        assert (records[0].bytes_received, records[0].bytes_sent) == (len(text), len(text))


async def test_the_app_gets_a_1009_disconnect_and_never_the_message() -> None:
    got: list[Message] = []

    async def collect(receive: Receive, send: Send) -> None:
        got.append(await receive())
        got.append(await receive())  # asking again changes nothing

    server = FakeServer([ClientBytes(11), ClientText("after")])
    _records, _ = await run(raw(ACCEPT, collect), server, max_message_size=10)
    assert [m["type"] for m in got] == ["websocket.disconnect", "websocket.disconnect"]
    assert got[0]["code"] == 1009
    assert server.unread == [ClientText("after")]


async def test_a_callable_limit_is_asked_per_connection_and_none_turns_it_off() -> None:
    def limit(scope: Scope) -> int | None:
        return None if scope["path"] == "/free" else 4

    big = ClientText("x" * 1000)
    free = FakeServer([big])
    await run(raw(ACCEPT, receives), free, path="/free", max_message_size=limit)
    assert free.closes == [(1000, "")]
    capped = FakeServer([big])
    await run(raw(ACCEPT, receives), capped, path="/capped", max_message_size=limit)
    assert capped.closes == [(1009, "message exceeds the limit of 4 bytes")]


# Records, ids and hooks --------------------------------------------------------------------


async def test_counts_and_connection_id() -> None:
    ids: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ids.append(connection_id(scope))
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(2):
            message = await receive()
            await send({"type": "websocket.send", "bytes": message["bytes"] * 2})
        await send({"type": "websocket.close", "code": 1000})

    server = FakeServer([ClientBytes(3), ClientBytes(2)])
    records, _ = await run(app, server)
    record = records[0]
    assert (record.messages_received, record.bytes_received) == (2, 5)
    assert (record.messages_sent, record.bytes_sent) == (2, 10)
    assert ids == [record.connection_id]
    assert len(record.connection_id) == 32


async def test_a_broken_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def hook(record: CloseRecord) -> None:
        raise ValueError("hook bug")

    server = FakeServer()
    guarded = WebSocketCloseMiddleware(raw(ACCEPT), on_close=hook)
    with caplog.at_level(logging.INFO, logger="closeguard"):
        await guarded(scope(), server.receive, server.send)
    assert server.closes == [(1000, "")]
    assert any("on_close hook failed" in r.getMessage() for r in caplog.records)


async def test_the_record_is_logged_once_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer([ClientClose(1001, b"tab\nclosed")])
    with caplog.at_level(logging.INFO, logger="closeguard"):
        await run(raw(ACCEPT, receives), server)
    [log] = [r for r in caplog.records if r.name == "closeguard"]
    assert log.levelno == logging.INFO
    assert log.code == 1001  # type: ignore[attr-defined]
    assert log.initiator == "client"  # type: ignore[attr-defined]
    assert log.reason == "tab\\nclosed"  # type: ignore[attr-defined]
    assert "\n" not in log.getMessage()
    assert "secret" not in log.getMessage()  # the query string is never logged


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"invalid_close": "ignore"}, "invalid_close must be 'raise' or 'replace'"),
        ({"max_message_size": 0}, "max_message_size must be a whole number of bytes"),
        ({"max_message_size": True}, "max_message_size must be a whole number of bytes"),
        ({"max_message_size": 2**70}, "max_message_size must be a whole number of bytes"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], words: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    with pytest.raises(ValueError, match=words):
        WebSocketCloseMiddleware(app, **options)


# Starlette ----------------------------------------------------------------------------------


async def test_starlette_middleware_stack_and_endpoint_exception() -> None:
    records: list[CloseRecord] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raise KeyError("nope")

    app = Starlette(
        routes=[WebSocketRoute("/ws", endpoint)],
        middleware=[Middleware(WebSocketCloseMiddleware, on_close=records.append)],
    )
    server = FakeServer()
    with pytest.raises(KeyError):
        await app(scope(), server.receive, server.send)
    assert server.closes == [(1011, "internal error")]
    assert records[0].exception == "KeyError"


async def test_starlette_disconnect_exception_is_swallowed() -> None:
    records: list[CloseRecord] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    app.add_middleware(WebSocketCloseMiddleware, on_close=records.append)
    server = FakeServer([ClientClose(1001)])
    await app(scope(), server.receive, server.send)  # no WebSocketDisconnect escapes
    assert server.closes == []
    assert (records[0].code, records[0].initiator, records[0].exception) == (1001, "client", None)


async def test_send_before_accept_is_the_servers_business() -> None:
    server = FakeServer()  # refuses a send before accept, as uvicorn does (RuntimeError)
    records, escaped = await run(raw(sends({"type": "websocket.send", "text": "x"})), server)
    assert isinstance(escaped, RuntimeError)
    assert not isinstance(escaped, CloseAlreadySent)
    assert records[0].accepted is False


async def test_a_limit_callable_returning_nonsense_fails_the_handshake() -> None:
    server = FakeServer()
    records, escaped = await run(raw(ACCEPT), server, max_message_size=lambda scope: -1)
    assert isinstance(escaped, ValueError)
    assert "max_message_size('/ws') returned -1" in str(escaped)
    assert "from 1 to" in str(escaped)
    assert server.wire == []  # the server answers HTTP 500
    [record] = records
    assert (record.accepted, record.code, record.exception) == (False, None, "ValueError")


async def test_the_apps_send_and_receive_are_marked_coroutine_functions() -> None:
    """asgiref's async_to_sync (Django Channels' sync consumers) warns on an unmarked ``send``;
    under warnings-as-errors, as here, that warning would fail this test."""
    from asgiref.sync import async_to_sync

    seen: list[tuple[bool, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((inspect.iscoroutinefunction(receive), inspect.iscoroutinefunction(send)))
        seen.append((asyncio.iscoroutinefunction(receive), asyncio.iscoroutinefunction(send)))
        async_to_sync(send)  # only wraps; raises here if it warns
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000})

    server = FakeServer()
    await run(app, server)
    # inspect knows the mark from Python 3.12 on; before, asyncio's check is the one in use.
    inspect_knows_marks = sys.version_info >= (3, 12)
    assert seen == [(True, inspect_knows_marks), (True, True)]
    assert server.closes == [(4000, "")]
