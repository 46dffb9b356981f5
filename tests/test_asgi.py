"""The middleware at the ASGI boundary, in process: tiny raw apps and Starlette apps.

The fake server (:mod:`tests.fake_server`) plays a scripted client and keeps every frame
closeguard puts on its wire; this is the fast layer. What a real client sees is in test_wire.py.

A promise the core's unit tests (test_connection.py) and a wire test both assert is not asserted
here again: this layer keeps what only the wrapper shows, a path through the wrapper or
:mod:`closeguard.server` of its own, a server behaviour the fake plays, a framework's path, or a
message shape the others do not send.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from closeguard import (
    LOGGER_NAME,
    CloseAlreadySent,
    CloseRecord,
    InvalidCloseCode,
    WebSocketCloseMiddleware,
    connection_id,
)
from closeguard.connection import qualified_name
from tests.fake_server import FakeServer, websocket_scope
from tests.fuzz_support import ClientBytes, ClientClose, ClientDrop, ClientEvent, ClientText

if sys.version_info >= (3, 11):
    from builtins import ExceptionGroup
else:
    from exceptiongroup import ExceptionGroup


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


@pytest.mark.parametrize("scope_type", ["http"])  # lifespan: tests/test_hooks.py
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


async def test_invalid_close_left_unhandled_becomes_1011_and_propagates() -> None:
    server = FakeServer()
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": 999}))
    records, escaped = await run(app, server)
    assert isinstance(escaped, InvalidCloseCode)
    assert server.closes == [(1011, "internal error")]
    assert (records[0].requested_code, records[0].exception) == (
        999,
        "closeguard.codes.InvalidCloseCode",
    )


@pytest.mark.parametrize(
    ("code", "sent", "violation"),
    [
        # The reason cut at a whole character.
        (4000, (4000, "é" * 61), ["close reason is 140 bytes in UTF-8"]),
        # A 1011 substitute: its reason is withheld, as an app's own 1011's is.
        (
            1015,
            (1011, "internal error"),
            [
                "close code 1015 is reserved",
                f"a 1011's reason is not sent; the app's was {'é' * 61!r}",
            ],
        ),
    ],
    ids=["reason cut", "1011"],
)
async def test_replace_mode_sends_the_substitute(
    code: int, sent: tuple[int, str], violation: list[str]
) -> None:
    server = FakeServer()
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": code, "reason": "é" * 70}))
    records, escaped = await run(app, server, invalid_close="replace")
    assert escaped is None
    assert server.closes == [sent]
    [record] = records
    assert (record.code, record.reason, record.requested_code) == (*sent, code)
    assert record.violation is not None
    assert record.violation.startswith(violation[0])
    assert all(words in record.violation for words in violation)


@pytest.mark.parametrize(
    ("reason", "violation"),
    [
        ("ZeroDivisionError: division by zero", "the app's was 'ZeroDivisionError: division"),
        ("", None),
        ("internal error", None),
    ],
)
async def test_an_apps_1011_goes_out_with_closeguards_reason_alone(
    reason: str, violation: str | None
) -> None:
    """Frameworks fill a 1011's reason with an exception's text: it never reaches the wire."""
    server = FakeServer()
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": 1011, "reason": reason}))
    records, escaped = await run(app, server)
    assert escaped is None
    [record] = records
    sent = "" if reason == "" else "internal error"
    assert server.closes == [(1011, sent)]
    assert (record.code, record.reason, record.initiator) == (1011, sent, "app")
    if violation is None:
        assert (record.requested_code, record.violation) == (None, None)
    else:
        assert record.requested_code == 1011
        assert record.violation is not None
        assert violation in record.violation


# Exceptions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inner", "named"),
    [
        ([RuntimeError("boom")], "RuntimeError"),  # a task group's one failure: that one
        ([ExceptionGroup("inner", [KeyError("k")])], "KeyError"),
        # Several: the group (exceptiongroup's backport on Python 3.10, so named by module).
        ([RuntimeError("a"), KeyError("b")], qualified_name(ExceptionGroup("", [KeyError()]))),
    ],
)
async def test_an_exception_group_names_what_it_holds(inner: list[Exception], named: str) -> None:
    async def grouped(receive: Receive, send: Send) -> None:
        raise ExceptionGroup("handler task group", inner)

    server = FakeServer()
    records, escaped = await run(raw(ACCEPT, grouped), server)
    assert isinstance(escaped, ExceptionGroup)
    assert server.closes == [(1011, "internal error")]
    [record] = records
    assert (record.code, record.initiator, record.exception) == (1011, "middleware", named)


async def test_a_group_of_ordinary_ends_after_the_disconnect_is_an_ordinary_end() -> None:
    async def grouped(receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        raise ExceptionGroup("handler task group", [WebSocketDisconnect(message["code"])])

    server = FakeServer([ClientClose(1000, b"bye")])
    records, escaped = await run(raw(ACCEPT, grouped), server)
    assert escaped is None
    assert server.closes == []
    [record] = records
    assert (record.code, record.initiator, record.exception) == (1000, "client", None)


@pytest.mark.parametrize(
    ("gone", "code"),
    [
        (ClientDrop(), 1006),  # the transport gone: the fake reports 1006, as uvicorn's legacy
        (ClientClose(1000), 1000),  # the client's close: the server reports its code
    ],
    ids=["dropped", "closed"],
)
async def test_a_data_send_that_finds_the_peer_gone_takes_the_servers_report(
    gone: ClientDrop | ClientClose, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The client leaves just before the app's third call, its send: the send raises OSError,
    and the server's receive then reports how the connection ended."""
    server = FakeServer([ClientEvent(3, gone)])
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        records, escaped = await run(
            raw(ACCEPT, sends({"type": "websocket.send", "text": "x"})), server
        )
    assert escaped is None  # the OSError after the peer left is an ordinary end
    assert server.closes == []
    [record] = records
    assert (record.code, record.reason, record.initiator) == (code, "", "client")
    assert record.exception is None
    assert record.messages_sent == 0
    [log] = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert log.levelno == logging.INFO


# Inbound size ------------------------------------------------------------------------------


async def echo_until_disconnect(receive: Receive, send: Send) -> None:
    for _ in range(100):
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text")})


@pytest.mark.parametrize(
    ("limit", "text", "too_big"),
    [
        (10, "a" * 10, False),
        (10, "a" * 11, True),
        (10, "é" * 5, False),  # 5 characters, 10 bytes: exactly the limit
        (10, "é" * 6, True),
        (10, "😀😀", False),
        (None, "aé€😀", False),  # 4 characters, 10 bytes, counted so both ways
        (1000, "é" * 400, False),  # 800 bytes
        (1000, "😀" * 300, True),  # 300 characters, 1200 bytes
        (1000, "€" * 334, True),  # 1002 bytes
        (1000, "€" * 333, False),  # 999 bytes
    ],
)
async def test_the_limit_and_the_counts_are_in_utf8_bytes(
    limit: int | None, text: str, too_big: bool
) -> None:
    """A text over the limit never reaches the app; one within it is delivered, echoed, and
    counted each way in the bytes it takes on the wire."""
    server = FakeServer([ClientText(text), ClientClose(1000)])
    records, escaped = await run(raw(ACCEPT, echo_until_disconnect), server, max_message_size=limit)
    assert escaped is None
    [record] = records
    if too_big:
        assert server.closes == [(1009, f"message exceeds the limit of {limit} bytes")]
        assert record.messages_received == 0
    else:
        assert server.closes == []
        assert [frame.data for frame in server.wire if frame.kind == "text"] == [text]
        size = len(text.encode("utf-8"))
        assert (record.messages_received, record.bytes_received) == (1, size)
        assert (record.messages_sent, record.bytes_sent) == (1, size)


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
    ("options", "error", "words"),
    [
        ({"invalid_close": "ignore"}, ValueError, "invalid_close must be 'raise' or 'replace'"),
        ({"max_message_size": 0}, ValueError, "max_message_size must be a whole number of"),
        ({"max_message_size": True}, ValueError, "max_message_size must be a whole number of"),
        ({"max_message_size": 2**70}, ValueError, "max_message_size must be a whole number of"),
        ({"logger": "closeguard"}, TypeError, "logger must be a logging.Logger, .* got 'clos"),
        ({"on_close": "hook"}, TypeError, "on_close must be a function taking a CloseRecord"),
        ({"on_close": [print, "hook"]}, TypeError, "every on_close hook must be a function"),
        ({"on_close": 42}, TypeError, "on_close must be a function taking a .* got 42"),
        ({"reraise": "no"}, TypeError, "reraise must be True or False, got 'no'"),
        ({"reraise": 0}, TypeError, "reraise must be True or False, got 0"),
        ({"drain_window": -1}, ValueError, "drain_window must be a number of seconds from 0"),
        ({"drain_window": True}, ValueError, "drain_window must be a number"),
        ({"drain_window": "10"}, ValueError, "drain_window .* got '10'"),
        ({"drain_file": 3}, TypeError, "drain_file must be a path"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout must be a number above 0"),
        ({"max_lifetime": -1}, ValueError, "max_lifetime must be a number above 0"),
        ({"first_message_timeout": "5"}, ValueError, "first_message_timeout .* got '5'"),
        ({"max_messages_per_second": True}, ValueError, "max_messages_per_second must be"),
        ({"max_connections": 0}, ValueError, "max_connections must be a whole number from 1"),
        ({"max_connections_per_client": 2.5}, ValueError, "max_connections_per_client must"),
        ({"client_key": "user"}, TypeError, "client_key must be a callable"),
        ({"rate_burst": lambda scope: 1}, TypeError, "rate_burst must be a number of seconds"),
    ],
)
def test_bad_options_fail_at_construction_naming_themselves(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Each says which option, what it got, and what is allowed: at construction, not at the
    end of every connection, where it would cost the records."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    with pytest.raises(error, match=words):
        WebSocketCloseMiddleware(app, **options)


def test_an_app_that_is_not_callable_fails_at_construction() -> None:
    with pytest.raises(TypeError, match="app must be an ASGI application"):
        WebSocketCloseMiddleware("app:app")  # type: ignore[arg-type]


async def test_every_hook_gets_the_record_in_turn_async_ones_awaited() -> None:
    calls: list[tuple[str, CloseRecord]] = []

    def plain(record: CloseRecord) -> None:
        calls.append(("plain", record))

    async def stored(record: CloseRecord) -> None:
        await asyncio.sleep(0)
        calls.append(("async", record))

    class Sink:
        async def __call__(self, record: CloseRecord) -> None:
            await asyncio.sleep(0)
            calls.append(("callable", record))

    server = FakeServer()
    guarded = WebSocketCloseMiddleware(raw(ACCEPT), on_close=[plain, stored, Sink()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        await guarded(scope(), server.receive, server.send)
    assert [name for name, _ in calls] == ["plain", "async", "callable"]
    assert len({id(record) for _, record in calls}) == 1  # the same record, once made
    assert calls[0][1].code == 1000


async def test_records_written_at_exit_run_async_hooks_in_a_loop_of_their_own() -> None:
    from closeguard.unwritten import _write_all

    stored: list[CloseRecord] = []

    async def store(record: CloseRecord) -> None:
        await asyncio.sleep(0)
        stored.append(record)

    server = FakeServer(idle="wait")
    guarded = WebSocketCloseMiddleware(raw(ACCEPT, receives), on_close=store)
    task = asyncio.ensure_future(guarded(scope(), server.receive, server.send))
    await settle(lambda: server.calls == 3)
    # The process exits with the server's task still waiting (daphne, granian): no loop runs
    # in the exiting thread.
    await asyncio.to_thread(_write_all)
    [record] = stored
    assert (record.accepted, record.code, record.initiator) == (True, None, "server")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(stored) == 1  # the record was written once


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


async def test_the_apps_send_and_receive_are_coroutine_functions() -> None:
    """asgiref's async_to_sync (Django Channels' sync consumers) warns on a ``send`` that is
    not a coroutine function; plain ``async def`` closures are, with no mark needed."""
    sync = pytest.importorskip("asgiref.sync")
    seen: list[tuple[bool, bool]] = []
    caught: list[warnings.WarningMessage] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((inspect.iscoroutinefunction(receive), inspect.iscoroutinefunction(send)))
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            sync.async_to_sync(send)  # only wraps: it warns at once if it would
        caught.extend(got)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000})

    server = FakeServer()
    records, escaped = await run(app, server)
    assert escaped is None
    assert seen == [(True, True)]
    assert [str(w.message) for w in caught] == []
    assert server.closes == [(4000, "")]
    assert len(records) == 1


# The server's send failing -------------------------------------------------------------------


def failing_send(server: FakeServer, message_type: str, error: BaseException) -> Send:
    """The fake server's ``send``, raising ``error`` for messages of ``message_type``."""

    async def send(message: Message) -> None:
        if message["type"] == message_type:
            raise error
        await server.send(message)

    return send


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (RuntimeError("invalid header value"), "RuntimeError"),
        (ConnectionResetError("reset by peer"), None),
    ],
    ids=["refused", "client gone"],
)
async def test_an_accept_the_server_does_not_send_is_no_websocket(
    error: Exception, exception: str | None
) -> None:
    """A server that cannot send the accept (say, a header it refuses) raises RuntimeError:
    the app's resulting exception is the server's to answer (HTTP 500), and no close goes. One
    that finds the client gone raises OSError: no error of the app's, and nothing escapes."""
    server = FakeServer()
    records: list[CloseRecord] = []
    guarded = WebSocketCloseMiddleware(raw(ACCEPT), on_close=records.append)
    send = failing_send(server, "websocket.accept", error)
    if exception is None:
        await guarded(scope(), server.receive, send)
    else:
        with pytest.raises(type(error)) as info:
            await guarded(scope(), server.receive, send)
        assert info.value is error
    assert server.wire == []
    [record] = records
    assert (record.accepted, record.code, record.exception) == (False, None, exception)


async def test_starlettes_disconnect_after_a_failed_send_is_ordinary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starlette turns the send's OSError into WebSocketDisconnect(1006); the record still
    says what the server reported: the client's 1000."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("x")

    records: list[CloseRecord] = []
    app = WebSocketCloseMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", endpoint)]), on_close=records.append
    )
    server = FakeServer([ClientEvent(3, ClientClose(1000))])
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        await app(scope(), server.receive, server.send)  # nothing escapes
    [record] = records
    assert (record.code, record.initiator, record.exception) == (1000, "client", None)
    [log] = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert log.levelno == logging.INFO


async def test_a_close_the_server_refuses_is_raised_to_it_once_the_app_is_done() -> None:
    """daphne's library refuses 1001 with an Exception naming the code; the error, raised to
    daphne when the app is done, makes daphne close with 1011."""
    server = FakeServer()
    refusal = Exception("invalid close code 1001 (must be 1000 or from [3000, 4999])")
    records: list[CloseRecord] = []
    app = raw(ACCEPT, sends({"type": "websocket.close", "code": 1001}))
    guarded = WebSocketCloseMiddleware(app, on_close=records.append)
    with pytest.raises(Exception, match="invalid close code 1001") as info:
        await guarded(scope(), server.receive, failing_send(server, "websocket.close", refusal))
    assert info.value is refusal
    [record] = records
    assert (record.code, record.requested_code, record.exception) == (1011, 1001, None)
    assert record.violation is not None
    assert "refused" in record.violation


@pytest.mark.parametrize(
    ("code", "error", "refused"),
    [
        (1001, "invalid close code 1001 (must be 1000 or from [3000, 4999])", True),
        (1011, "invalid close code 1011 (must be 1000 or from [3000, 4999])", True),
        (1001, "invalid close code 1011 (must be 1000 or ...)", False),  # another code
        (1000, "invalid close code 1000", False),  # a 1000 is never called refused
        (1001, "'WebSocketProtocol' object has no attribute 'transfer_data_task'", False),
    ],
)
def test_daphnes_refusal_of_a_code_is_named_at_the_server_boundary(
    code: int, error: str, refused: bool
) -> None:
    from closeguard.server import refuses_code

    assert refuses_code(Exception(error), code) is refused


# Cancellation --------------------------------------------------------------------------------


async def settle(until: Callable[[], bool]) -> None:
    for _ in range(1000):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the connection never got there")


async def test_a_cancelled_receive_sends_1012_leaves_one_record_then_propagates() -> None:
    """A server tearing the task down (hypercorn after its graceful timeout) would leave the
    client a 1011 or nothing: closeguard sends 1012, which clients retry. An async hook still
    runs to its end, though the cancellation would land in it."""
    records: list[CloseRecord] = []
    stored: list[CloseRecord] = []

    async def store(record: CloseRecord) -> None:
        await asyncio.sleep(0.01)  # a cancellation would land here, were it not shielded
        stored.append(record)

    server = FakeServer(idle="wait")  # a quiet client: the app's receive waits
    guarded = WebSocketCloseMiddleware(raw(ACCEPT, receives), on_close=[records.append, store])
    task = asyncio.ensure_future(guarded(scope(), server.receive, server.send))
    await settle(lambda: server.calls == 3)  # connect, accept, the waiting receive
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.closes == [(1012, "")]
    [record] = records
    assert (record.accepted, record.code, record.initiator) == (True, 1012, "server")
    assert record.exception is None
    assert stored == [record]


async def test_the_teardown_close_is_given_up_on_after_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server whose send hangs during its shutdown does not hold the task: the record then
    says no Close frame is known to have gone out."""
    monkeypatch.setattr("closeguard.asgi.TEARDOWN_CLOSE_WAIT", 0.05)
    records: list[CloseRecord] = []
    accepted = asyncio.Event()

    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            await asyncio.Event().wait()  # never returns
        accepted.set()

    async def receive() -> Message:
        if not accepted.is_set():
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    guarded = WebSocketCloseMiddleware(raw(ACCEPT, receives), on_close=records.append)
    task = asyncio.ensure_future(guarded(scope(), receive, send))
    await asyncio.wait_for(accepted.wait(), 5)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    [record] = records
    assert (record.accepted, record.code, record.initiator) == (True, None, "server")


async def test_a_task_cancelled_before_accept_leaves_one_record() -> None:
    records: list[CloseRecord] = []

    async def wait(receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()

    server = FakeServer()
    guarded = WebSocketCloseMiddleware(raw(wait), on_close=records.append)
    task = asyncio.ensure_future(guarded(scope(), server.receive, server.send))
    await settle(lambda: server.calls == 1)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = records
    assert (record.accepted, record.code, record.initiator) == (False, None, "server")


@pytest.mark.parametrize(
    ("steps", "exception"),
    [
        ((ACCEPT,), None),  # closeguard's 1000 for a forgotten close
        ((ACCEPT, raises), "RuntimeError"),  # closeguard's 1011
        ((ACCEPT, sends({"type": "websocket.close", "code": 4000})), None),  # the app's own
    ],
    ids=["1000", "1011", "app close"],
)
async def test_a_task_cancelled_while_the_server_holds_a_close_leaves_one_record(
    steps: tuple[Callable[[Receive, Send], Awaitable[None]], ...], exception: str | None
) -> None:
    records: list[CloseRecord] = []
    server = FakeServer()
    holding = asyncio.Event()

    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            holding.set()
            await asyncio.Event().wait()  # a server stuck on the close, until cancelled
        await server.send(message)

    guarded = WebSocketCloseMiddleware(raw(*steps), on_close=records.append)
    task = asyncio.ensure_future(guarded(scope(), server.receive, send))
    await asyncio.wait_for(holding.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.closes == []
    [record] = records
    assert (record.accepted, record.code, record.initiator) == (True, None, "server")
    assert record.exception == exception


# Broken logging and hooks --------------------------------------------------------------------


@pytest.fixture
def closeguard_logger() -> Iterator[logging.Logger]:
    """closeguard's own logger at INFO, with its handlers and filters put back afterwards."""
    logger = logging.getLogger(LOGGER_NAME)
    level, handlers, filters = logger.level, list(logger.handlers), list(logger.filters)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.filters[:] = filters


class BrokenHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise RuntimeError("handler bug")


class BrokenFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.calls += 1
        raise RuntimeError("filter bug")


@pytest.mark.parametrize("broken", ["handler", "filter"])
@pytest.mark.parametrize("app_raises", [False, True])
async def test_a_broken_log_still_calls_the_hook_once_and_raises_nothing(
    closeguard_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    broken: str,
    app_raises: bool,
) -> None:
    part: BrokenHandler | BrokenFilter
    if broken == "handler":
        part = BrokenHandler()
        closeguard_logger.addHandler(part)
    else:
        part = BrokenFilter()
        closeguard_logger.addFilter(part)
    server = FakeServer()
    steps = (ACCEPT, raises) if app_raises else (ACCEPT,)
    records, escaped = await run(raw(*steps), server, reraise=app_raises)
    # Only the app's own exception reaches the server, never the log's.
    if app_raises:
        assert isinstance(escaped, RuntimeError)
        assert "boom" in str(escaped)
    else:
        assert escaped is None
    assert part.calls >= 1  # the log was really tried
    [record] = records
    assert server.closes == ([(1011, "internal error")] if app_raises else [(1000, "")])
    err = capsys.readouterr().err
    assert f"closeguard: logging the close record of {record.connection_id} failed" in err


async def test_a_broken_log_and_a_broken_hook_raise_nothing(
    closeguard_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[CloseRecord] = []

    def hook(record: CloseRecord) -> None:
        calls.append(record)
        raise ValueError("hook bug")

    closeguard_logger.addHandler(BrokenHandler())
    server = FakeServer()
    guarded = WebSocketCloseMiddleware(raw(ACCEPT), on_close=hook)
    await guarded(scope(), server.receive, server.send)
    assert len(calls) == 1
    err = capsys.readouterr().err
    assert f"closeguard: the on_close hook for {calls[0].connection_id} failed" in err
    assert "hook bug" in err
