"""The decisions, without a server: what each event does to the connection and its record.

Every test says what the record (or the message handed to the server) would say, in the
numbers and words a reader of the log sees, not in the core's constants.
"""

from __future__ import annotations

import asyncio

import pytest
from starlette.websockets import WebSocketDisconnect

from closeguard import CloseAlreadySent, InvalidCloseCode, InvalidCloseReason
from closeguard.connection import (
    CloseInstead,
    Connection,
    Ending,
    State,
    format_client,
    message_size,
)
from closeguard.record import FIELD_NAMES, CloseRecord

#: What daphne's WebSocket library raises for a close code it will not send.
DAPHNE_REFUSES_1001 = Exception("invalid close code 1001 (must be 1000 or from [3000, 4999])")
SEND = {"type": "websocket.send", "text": "x"}
DENIAL_401 = {"type": "websocket.http.response.start", "status": 401, "headers": []}


def make(*, limit: int | None = 100, replace: bool = False, reraise: bool = True) -> Connection:
    return Connection(
        connection_id="c1",
        path="/ws",
        client=("127.0.0.1", 5000),
        max_message_size=limit,
        replace_invalid=replace,
        reraise=reraise,
    )


def opened(*, limit: int | None = 100, replace: bool = False, reraise: bool = True) -> Connection:
    conn = make(limit=limit, replace=replace, reraise=reraise)
    conn.server_accepts()
    return conn


def close(code: object = 1000, reason: object = "") -> dict[str, object]:
    return {"type": "websocket.close", "code": code, "reason": reason}


def disconnect(code: object = 1000, reason: str = "") -> dict[str, object]:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


def said(record: CloseRecord) -> tuple[bool, int | None, str, str]:
    """What a reader of the record sees first: accepted, code, reason, who ended it."""
    return (record.accepted, record.code, record.reason, record.initiator)


# Accept and refusal --------------------------------------------------------------------------


def test_nothing_is_accepted_until_the_server_takes_the_accept() -> None:
    waiting = make()
    assert waiting.state is State.CONNECTING
    assert waiting.record(0).accepted is False
    conn = make()
    conn.server_accepts()
    assert conn.state is State.OPEN
    assert conn.record(0).accepted is True


def test_a_late_accept_changes_nothing_once_the_connection_ended() -> None:
    conn = make()
    conn.server_delivers(disconnect(1006))
    conn.server_accepts()
    assert conn.state is State.DISCONNECTED
    assert conn.record(0).accepted is False


def test_close_before_accept_is_a_refusal_and_is_not_checked() -> None:
    conn = make()
    message = close(1006)
    assert conn.app_sends(message) is message
    record = conn.record(0)
    assert (record.accepted, record.http_status, record.code) == (False, 403, None)
    assert (record.requested_code, record.violation) == (None, None)


def test_denial_response_records_its_status() -> None:
    conn = make()
    conn.app_sends(DENIAL_401)
    record = conn.record(0)
    assert (record.accepted, record.http_status, conn.state) == (False, 401, State.REFUSED)
    assert record.code is None


# The app's close -----------------------------------------------------------------------------


def test_a_valid_close_goes_out_as_asked() -> None:
    conn = opened()
    assert conn.app_sends(close(4000, "bye")) == close(4000, "bye")
    record = conn.record(0.5)
    assert said(record) == (True, 4000, "bye", "app")
    assert record.duration == 0.5
    assert conn.state is State.CLOSED_BY_APP


def test_close_without_code_means_1000() -> None:
    conn = opened()
    assert conn.app_sends({"type": "websocket.close"}) == close(1000, "")


def test_the_close_handed_over_carries_a_plain_int() -> None:
    """daphne rejects a code whose type is not exactly int; the ASGI spec says int."""
    conn = opened()

    class Code(int):
        pass

    sent = conn.app_sends(close(Code(4000)))
    assert sent is not None
    assert type(sent["code"]) is int


def test_an_invalid_close_raises_and_leaves_the_connection_open() -> None:
    conn = opened()
    with pytest.raises(InvalidCloseCode):
        conn.app_sends(close(1006))
    assert conn.state is State.OPEN
    assert conn.app_sends(close(1000)) == close(1000, "")
    record = conn.record(0)
    assert (record.code, record.requested_code) == (1000, 1006)
    assert record.violation is not None
    assert "1006" in record.violation


def test_a_long_reason_raises_in_strict_mode() -> None:
    conn = opened()
    with pytest.raises(InvalidCloseReason):
        conn.app_sends(close(4000, "x" * 124))


def test_replace_mode_substitutes_and_remembers_the_request() -> None:
    conn = opened(replace=True)
    assert conn.app_sends(close(1005, "bye")) == close(1000, "bye")
    record = conn.record(0)
    assert (record.code, record.requested_code, record.initiator) == (1000, 1005, "app")


def test_a_second_close_raises() -> None:
    conn = opened()
    conn.app_sends(close(4000))
    with pytest.raises(CloseAlreadySent, match="already closed with code 4000"):
        conn.app_sends(close(4001))
    assert conn.record(0).code == 4000


# Data after a close --------------------------------------------------------------------------


def test_data_is_allowed_while_open_and_left_to_the_server_before_accept() -> None:
    assert make().app_sends(SEND) is SEND  # the server answers with its own error
    assert opened().app_sends(SEND) is SEND


def test_data_after_the_apps_close_raises() -> None:
    conn = opened()
    conn.app_sends(close(4000))
    with pytest.raises(CloseAlreadySent, match="the app already closed this connection") as info:
        conn.app_sends(SEND)
    assert "code 4000" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_data_after_a_disconnect_is_left_to_the_server() -> None:
    conn = opened()
    conn.server_delivers(disconnect(1001))
    assert conn.app_sends(SEND) is SEND  # the server raises its own OSError


# What the server reports ---------------------------------------------------------------------


def test_client_disconnect_is_the_end() -> None:
    conn = opened()
    conn.server_delivers(disconnect(4321, "bye"))
    assert said(conn.record(0)) == (True, 4321, "bye", "client")
    # The app answering a disconnect with a close sends nothing: nobody is left to reach.
    assert conn.app_sends(close(1000)) is None


def test_disconnect_without_code_is_1005() -> None:
    conn = opened()
    conn.server_delivers(disconnect(None))
    assert conn.record(0).code == 1005


@pytest.mark.parametrize(
    ("code", "initiator"),
    [
        (1012, "server"),  # uvicorn's own shutdown
        (1000, "client"),
        (1001, "client"),
        (1006, "client"),
        (1011, "client"),
        (4000, "client"),
        (None, "client"),
    ],
)
def test_a_1012_disconnect_is_the_servers_and_any_other_the_clients(
    code: int | None, initiator: str
) -> None:
    conn = opened()
    message = disconnect(code)
    if code == 1012:
        del message["reason"]  # as uvicorn reports its own shutdown
    conn.server_delivers(message)
    record = conn.record(0)
    assert record.initiator == initiator
    assert record.code == (1005 if code is None else code)


@pytest.mark.parametrize("reason", ["", "moving"])
def test_a_clients_own_1012_is_the_clients(reason: str) -> None:
    """uvicorn passes a client's reason on, an empty one too; its own 1012 has none."""
    conn = opened()
    conn.server_delivers({"type": "websocket.disconnect", "code": 1012, "reason": reason})
    record = conn.record(0)
    assert (record.code, record.reason, record.initiator) == (1012, reason, "client")


def test_disconnect_after_the_apps_close_does_not_change_the_record() -> None:
    conn = opened()
    conn.app_sends(close(4000, "app"))
    conn.server_delivers(disconnect(4000))
    assert said(conn.record(0)) == (True, 4000, "app", "app")


def test_a_disconnect_before_the_server_took_an_accept_has_no_code() -> None:
    conn = make()
    conn.server_delivers(disconnect(1006))
    record = conn.record(0)
    assert (record.accepted, record.code, record.initiator) == (False, None, "client")
    assert not conn.awaits_report


@pytest.mark.parametrize("first", ["a disconnect", "a failed accept"])
def test_a_disconnect_after_the_handshake_failed_still_has_no_code(first: str) -> None:
    """An app that reads on after the handshake failed is told of the end (again): the fake
    server does so, as servers that do not hang do. No Close frame ever applied to this
    handshake, so no code may come of it."""
    conn = make()
    if first == "a disconnect":
        conn.server_delivers(disconnect(1006))
    else:
        conn.server_loses_peer({"type": "websocket.accept"})  # the accept's send raised OSError
    conn.server_delivers(disconnect(1006))
    record = conn.record(0)
    assert (record.accepted, record.code) == (False, None)


# A send that found the peer gone -------------------------------------------------------------


def test_a_failed_send_waits_for_the_servers_report_of_the_end() -> None:
    conn = opened()
    conn.server_loses_peer(close(1000))
    assert conn.state is State.DISCONNECTED
    assert conn.awaits_report
    conn.server_delivers(disconnect(1000, "done"))
    assert not conn.awaits_report
    assert said(conn.record(0)) == (True, 1000, "done", "client")


def test_a_failed_send_without_a_report_is_1006() -> None:
    conn = opened()
    conn.server_loses_peer(close(1000))
    record = conn.record(0)
    assert (record.code, record.initiator, record.exception) == (1006, "client", None)


def test_a_failed_accept_is_no_websocket_at_all() -> None:
    conn = make()
    conn.server_loses_peer(close(1000))
    assert not conn.awaits_report
    record = conn.record(0)
    assert (record.accepted, record.code) == (False, None)


def test_a_failed_closing_send_is_abnormal_unless_the_server_says_more() -> None:
    conn = opened()
    ending = conn.app_ends(RuntimeError("boom"))
    assert ending.close == close(1011, "internal error")
    conn.server_loses_peer(close(1000))  # the 1011 found the peer gone
    assert conn.awaits_report
    record = conn.record(0)
    assert (record.code, record.initiator, record.exception) == (1006, "client", "RuntimeError")


def test_a_failed_send_of_the_apps_close_takes_the_servers_report() -> None:
    conn = opened()
    conn.app_sends(close(4000, "bye"))
    conn.server_loses_peer(close(1000))
    conn.server_delivers(disconnect(1001))
    assert said(conn.record(0)) == (True, 1001, "", "client")


def test_a_failed_send_after_the_server_reported_the_end_changes_nothing() -> None:
    conn = opened()
    conn.server_delivers(disconnect(1001, "tab closed"))
    conn.server_loses_peer(close(1000))
    assert not conn.awaits_report
    assert said(conn.record(0)) == (True, 1001, "tab closed", "client")


# Inbound size --------------------------------------------------------------------------------


def test_message_too_big_closes_1009_and_tells_the_app_the_same() -> None:
    conn = opened(limit=10)
    reason = "message exceeds the limit of 10 bytes"
    answer = conn.server_delivers({"type": "websocket.receive", "bytes": b"x" * 11})
    assert isinstance(answer, CloseInstead)
    close_message, app_hears, fallback = answer
    assert not fallback  # a 1009 goes the server's own way: daphne's 1011
    assert close_message == close(1009, reason)
    assert app_hears == {"type": "websocket.disconnect", "code": 1009, "reason": reason}
    assert said(conn.record(0)) == (True, 1009, reason, "middleware")
    assert conn.state is State.CLOSED_BY_MIDDLEWARE
    # The app's usual close after a disconnect is dropped, not an error.
    assert conn.app_sends(close(1000)) is None
    with pytest.raises(CloseAlreadySent, match="closeguard already closed"):
        conn.app_sends(SEND)
    # What the client sent meanwhile is not counted as received, nor refused twice.
    assert conn.server_delivers({"type": "websocket.receive", "bytes": b"x" * 11}) is None
    assert conn.record(0).messages_received == 0


def test_messages_within_the_limit_are_delivered_and_counted_each_way() -> None:
    conn = opened(limit=10)
    received = {"type": "websocket.receive", "text": "é" * 5}  # 10 bytes: at the limit
    assert conn.server_delivers(received) is received
    sent = {"type": "websocket.send", "bytes": b"abc"}
    assert conn.app_sends(sent) is sent
    record = conn.record(0)
    assert (record.messages_received, record.bytes_received) == (1, 10)
    assert (record.messages_sent, record.bytes_sent) == (1, 3)


def test_a_send_that_found_the_peer_gone_is_not_counted() -> None:
    """The record says what the client received: a message whose send raised never got there."""
    conn = opened()
    conn.app_sends({"type": "websocket.send", "text": "delivered"})
    lost = {"type": "websocket.send", "text": "lost"}
    conn.app_sends(lost)
    conn.server_loses_peer(lost)
    record = conn.record(0)
    assert (record.messages_sent, record.bytes_sent) == (1, 9)


def test_no_limit_delivers_any_size() -> None:
    conn = opened(limit=None)
    big = {"type": "websocket.receive", "bytes": b"x" * 100_000}
    assert conn.server_delivers(big) is big
    assert conn.record(0).bytes_received == 100_000


# How the app ended ---------------------------------------------------------------------------


def test_return_while_open_gets_1000_from_the_middleware() -> None:
    conn = opened()
    assert conn.app_ends(None) == Ending(close=close(1000, ""))
    assert said(conn.record(0)) == (True, 1000, "", "middleware")
    assert conn.record(0).exception is None


@pytest.mark.parametrize("setup", ["closed", "disconnected", "never accepted", "refused"])
def test_return_after_the_end_sends_nothing(setup: str) -> None:
    conn = make() if setup in ("never accepted", "refused") else opened()
    if setup == "closed":
        conn.app_sends(close(4000))
    elif setup == "disconnected":
        conn.server_delivers(disconnect(1000))
    elif setup == "refused":
        conn.app_sends({"type": "websocket.http.response.start", "status": 403})
    before = conn.record(0)
    assert conn.app_ends(None) == Ending()
    assert conn.record(0) == before


@pytest.mark.parametrize("reraise", [True, False])
def test_an_exception_while_open_becomes_a_generic_1011(reraise: bool) -> None:
    conn = opened(reraise=reraise)
    ending = conn.app_ends(ValueError("password=hunter2"))
    assert ending.close == close(1011, "internal error")
    assert "hunter2" not in str(ending.close)
    assert ending.reraise is reraise
    assert ending.log_traceback is not reraise  # one traceback: the server's, or the log's
    record = conn.record(0)
    assert said(record) == (True, 1011, "internal error", "middleware")
    assert record.exception == "ValueError"


def test_exception_names_are_qualified() -> None:
    conn = opened()
    conn.app_ends(InvalidCloseCode("x", 1))
    assert conn.record(0).exception == "closeguard.codes.InvalidCloseCode"


@pytest.mark.parametrize("reraise", [True, False])
@pytest.mark.parametrize("how", ["app failed first", "server refused the accept"])
def test_an_exception_before_accept_sends_nothing(how: str, reraise: bool) -> None:
    """In state CONNECTING no close can reach the client: the server answers (HTTP 500)."""
    conn = make(reraise=reraise)
    error = RuntimeError("a header the server cannot send")
    # Either way the core never heard server_accepts().
    ending = conn.app_ends(error)
    assert ending == Ending(close=None, reraise=reraise, log_traceback=not reraise)
    record = conn.record(0)
    assert (record.accepted, record.code, record.exception) == (False, None, "RuntimeError")


def test_an_exception_after_the_apps_close_sends_nothing_more() -> None:
    conn = opened()
    conn.app_sends(close(4000))
    ending = conn.app_ends(RuntimeError())
    assert ending.close is None
    assert ending.reraise
    record = conn.record(0)
    assert (record.code, record.initiator, record.exception) == (4000, "app", "RuntimeError")


@pytest.mark.parametrize(
    "error", [WebSocketDisconnect(1000), ConnectionResetError(), OSError("gone")]
)
def test_a_disconnect_exception_while_open_is_an_app_error(error: Exception) -> None:
    conn = opened()
    ending = conn.app_ends(error)
    assert ending.close == close(1011, "internal error")
    assert conn.record(0).exception is not None


@pytest.mark.parametrize(
    "error", [WebSocketDisconnect(1001), ConnectionResetError(), OSError("gone")]
)
@pytest.mark.parametrize(
    "end", ["server reported", "send found the peer gone", "app closed", "too big"]
)
def test_a_disconnect_exception_after_the_end_is_ordinary(error: Exception, end: str) -> None:
    conn = opened(limit=10)
    if end == "server reported":
        conn.server_delivers(disconnect(1001))
    elif end == "send found the peer gone":
        conn.server_loses_peer(close(1000))
    elif end == "app closed":
        conn.app_sends(close(4000))
    else:
        conn.server_delivers({"type": "websocket.receive", "bytes": b"x" * 11})
    before = conn.record(0)
    assert conn.app_ends(error) == Ending()
    record = conn.record(0)
    assert record.exception is None
    assert record == before


@pytest.mark.parametrize("error", [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit()])
@pytest.mark.parametrize("accepted", [True, False])
def test_a_cancelled_task_is_torn_down_by_the_server(error: BaseException, accepted: bool) -> None:
    """An open connection still gets 1012, a code clients retry, sent shielded from the
    cancellation; before accept there is nobody to tell."""
    conn = opened() if accepted else make()
    ending = conn.app_ends(error)
    record = conn.record(0)
    if accepted:
        assert ending == Ending(close=close(1012, ""), reraise=True, shielded=True)
        assert (record.code, record.reason, record.initiator) == (1012, "", "server")
    else:
        assert ending == Ending(close=None, reraise=True)
        assert conn.state is State.TORN_DOWN
        assert (record.accepted, record.code, record.initiator) == (False, None, "server")
    assert record.exception is None
    assert not conn.awaits_report


def test_a_cancellation_after_the_end_leaves_the_record_as_it_was() -> None:
    conn = opened()
    conn.app_sends(close(4000, "bye"))
    assert conn.app_ends(asyncio.CancelledError()) == Ending(reraise=True)
    assert said(conn.record(0)) == (True, 4000, "bye", "app")


# A close the server did not send -------------------------------------------------------------


def test_a_close_the_server_refused_is_its_1011() -> None:
    """daphne's library sends only 1000 and 3000-4999, raises naming the code otherwise, and
    closes with 1011 once the error reaches it."""
    conn = opened()
    sent = conn.app_sends(close(1001, "going"))
    assert sent is not None
    conn.server_refuses_code(1001, DAPHNE_REFUSES_1001)
    record = conn.record(0)
    assert (record.code, record.requested_code) == (1011, 1001)
    assert record.violation is not None
    assert "refused" in record.violation
    assert "1001" in record.violation
    assert record.exception is None


def test_a_refusal_of_closeguards_own_close_keeps_no_requested_code() -> None:
    conn = opened(limit=10)
    conn.server_delivers({"type": "websocket.receive", "bytes": b"x" * 11})
    conn.server_refuses_code(
        1009, Exception("invalid close code 1009 (must be 1000 or from [3000, 4999])")
    )
    record = conn.record(0)
    assert (record.code, record.requested_code) == (1011, None)
    assert record.violation is not None
    assert "refused to send close code 1009" in record.violation


def test_a_refusal_of_a_substitute_keeps_both_reasons() -> None:
    conn = opened(replace=True)
    sent = conn.app_sends(close(1015))
    assert sent == close(1011, "")
    conn.server_refuses_code(1011, Exception("invalid close code 1011 (must be 1000 or ...)"))
    record = conn.record(0)
    assert (record.code, record.requested_code) == (1011, 1015)
    assert record.violation is not None
    assert "1015" in record.violation
    assert "refused to send close code 1011" in record.violation


def test_any_other_close_failure_leaves_no_code() -> None:
    conn = opened()
    sent = conn.app_sends(close(1000))
    assert sent is not None
    error = AttributeError("'WebSocketProtocol' object has no attribute 'transfer_data_task'")
    conn.server_fails_close(sent, error)
    record = conn.record(0)
    assert record.code is None
    assert record.violation is not None
    assert "failed to send close code 1000" in record.violation
    assert "AttributeError" in record.violation
    assert "refused" not in record.violation
    assert record.exception is None


def test_a_close_interrupted_by_cancellation_has_no_known_code() -> None:
    conn = opened()
    ending = conn.app_ends(None)
    assert ending.close == close(1000, "")
    conn.server_cancels()
    assert conn.state is State.TORN_DOWN
    record = conn.record(0)
    assert (record.accepted, record.code, record.initiator) == (True, None, "server")
    assert not conn.awaits_report


# The record ----------------------------------------------------------------------------------


def test_the_record_has_its_fields_in_order_and_the_counts_where_they_belong() -> None:
    conn = opened()
    conn.app_sends(close(4000, "bye"))
    conn.messages_received, conn.bytes_received = 1, 2
    conn.messages_sent, conn.bytes_sent = 3, 4
    record = conn.record(0.5)
    assert list(record.as_dict()) == list(FIELD_NAMES)
    assert (record.messages_received, record.bytes_received) == (1, 2)
    assert (record.messages_sent, record.bytes_sent) == (3, 4)
    assert (record.connection_id, record.path, record.duration) == ("c1", "/ws", 0.5)


def test_counts_default_to_nothing() -> None:
    record = opened().record(0)
    assert (record.messages_received, record.bytes_received) == (0, 0)
    assert (record.messages_sent, record.bytes_sent) == (0, 0)


@pytest.mark.parametrize(
    ("client", "shown"),
    [
        (("1.2.3.4", 5), "1.2.3.4:5"),
        (("::1", 5), "[::1]:5"),
        (["::1", 443], "[::1]:443"),  # ASGI allows any two-item iterable; servers give these
        (("203.0.113.7", 0), "203.0.113.7"),  # port 0: unknown (uvicorn --proxy-headers)
        (None, None),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        (("unix-socket",), None),
    ],
)
def test_the_client_is_made_text_for_the_record(client: object, shown: str | None) -> None:
    assert format_client(client) == shown
    conn = Connection(connection_id="c1", path="/ws", client=client, max_message_size=None)
    assert conn.record(0).client == shown


# Sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 0),
        ("hello", 5),
        ("é", 2),
        ("€", 3),
        ("😀", 4),
        ("aé€😀", 10),
        ("\ud800", 3),  # a lone surrogate: never raises, counts as a lenient encoder writes it
        ("ok\udfff", 5),
    ],
)
def test_text_is_measured_in_utf8_bytes(text: str, size: int) -> None:
    assert message_size({"type": "websocket.receive", "text": text}) == size
    assert message_size({"type": "websocket.send", "text": text}) == size


@pytest.mark.parametrize(
    ("message", "size"),
    [
        ({"type": "websocket.receive", "bytes": b"\x00\xff\x10"}, 3),
        ({"type": "websocket.receive", "bytes": b""}, 0),
        ({"type": "websocket.receive", "text": None, "bytes": b"ab"}, 2),
        ({"type": "websocket.send", "bytes": None, "text": "é"}, 2),
        ({"type": "websocket.send"}, None),  # no payload: not data
        ({"type": "websocket.disconnect", "code": 1000}, None),
    ],
)
def test_message_size_takes_text_or_bytes(message: dict[str, object], size: int | None) -> None:
    assert message_size(message) == size


def test_the_limit_counts_bytes_not_characters() -> None:
    """A text of exactly ``limit`` UTF-8 bytes fits though it has fewer characters; one more
    character of any kind does not."""
    limit = 10
    at_limit = {"type": "websocket.receive", "text": "é" * 5}
    over = {"type": "websocket.receive", "text": "é" * 5 + "a"}
    assert message_size(at_limit) == limit
    assert len("é" * 5) < limit
    assert message_size(over) == limit + 1
    assert len("é" * 5 + "a") < limit


def test_the_counts_are_utf8_bytes_each_way() -> None:
    """The record's byte counts are what went on the wire: text as UTF-8, both ways."""
    conn = opened(limit=None)
    for text in ("é€", "ascii", "👋"):
        assert conn.app_sends_data({"type": "websocket.send", "text": text})
        message = {"type": "websocket.receive", "text": text}
        assert conn.server_delivers(message) is message
    conn.app_sends_data({"type": "websocket.send", "bytes": b"\x00\xff"})
    assert (conn.messages_sent, conn.bytes_sent) == (4, 5 + 5 + 4 + 2)
    assert (conn.messages_received, conn.bytes_received) == (3, 5 + 5 + 4)
