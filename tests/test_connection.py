"""The decisions, without a server: what each event does to the connection and its record."""

from __future__ import annotations

import asyncio

import pytest
from starlette.websockets import WebSocketDisconnect

from middleware import CloseAlreadySent, InvalidCloseCode, InvalidCloseReason
from middleware.connection import Connection, State
from middleware.record import FIELD_NAMES


def make(*, limit: int | None = 100, replace: bool = False) -> Connection:
    return Connection(
        connection_id="c1",
        path="/ws",
        client="127.0.0.1:5000",
        max_message_size=limit,
        replace_invalid=replace,
    )


def opened(**kwargs: object) -> Connection:
    conn = make(**kwargs)  # type: ignore[arg-type]
    conn.app_accepts()
    return conn


def close(code: object = 1000, reason: object = "") -> dict[str, object]:
    return {"type": "websocket.close", "code": code, "reason": reason}


def test_a_valid_close_goes_out_as_asked() -> None:
    conn = opened()
    assert conn.app_closes(close(4000, "bye")) == close(4000, "bye")
    record = conn.record(0.5)
    assert (record.code, record.reason, record.initiator) == (4000, "bye", "app")
    assert record.accepted
    assert record.duration == 0.5
    assert conn.state is State.CLOSED_BY_APP


def test_close_without_code_means_1000() -> None:
    conn = opened()
    assert conn.app_closes({"type": "websocket.close"}) == close(1000, "")


def test_an_invalid_close_raises_and_leaves_the_connection_open() -> None:
    conn = opened()
    with pytest.raises(InvalidCloseCode):
        conn.app_closes(close(1006))
    assert conn.state is State.OPEN
    assert conn.app_closes(close(1000)) == close(1000, "")
    record = conn.record(0)
    assert (record.code, record.requested_code) == (1000, 1006)
    assert record.violation is not None
    assert "1006" in record.violation


def test_a_long_reason_raises_in_strict_mode() -> None:
    conn = opened()
    with pytest.raises(InvalidCloseReason):
        conn.app_closes(close(4000, "x" * 124))


def test_replace_mode_substitutes_and_remembers_the_request() -> None:
    conn = opened(replace=True)
    assert conn.app_closes(close(1005, "bye")) == close(1000, "bye")
    record = conn.record(0)
    assert (record.code, record.requested_code, record.initiator) == (1000, 1005, "app")


def test_a_second_close_raises() -> None:
    conn = opened()
    conn.app_closes(close(4000))
    with pytest.raises(CloseAlreadySent, match="already closed with code 4000"):
        conn.app_closes(close(4001))
    assert conn.record(0).code == 4000


def test_close_before_accept_is_a_refusal_and_is_not_checked() -> None:
    conn = make()
    message = close(1006)
    assert conn.app_closes(message) is message
    record = conn.record(0)
    assert (record.accepted, record.http_status, record.code) == (False, 403, None)


def test_denial_response_records_its_status() -> None:
    conn = make()
    conn.app_denies(401)
    record = conn.record(0)
    assert (record.accepted, record.http_status, conn.state) == (False, 401, State.REFUSED)


def test_client_disconnect_is_the_end() -> None:
    conn = opened()
    conn.server_disconnects({"type": "websocket.disconnect", "code": 4321, "reason": "bye"})
    record = conn.record(0)
    assert (record.code, record.reason, record.initiator) == (4321, "bye", "client")
    # The app answering a disconnect with a close sends nothing: nobody is left to reach.
    assert conn.app_closes(close(1000)) is None


def test_disconnect_without_code_is_1005() -> None:
    conn = opened()
    conn.server_disconnects({"type": "websocket.disconnect", "code": None})
    assert conn.record(0).code == 1005


def test_disconnect_after_the_apps_close_does_not_change_the_record() -> None:
    conn = opened()
    conn.app_closes(close(4000, "app"))
    conn.server_disconnects({"type": "websocket.disconnect", "code": 4000})
    assert conn.record(0).initiator == "app"


def test_message_too_big_closes_1009_and_tells_the_app_the_same() -> None:
    conn = opened(limit=10)
    assert conn.message_too_big() == close(1009, "message exceeds the limit of 10 bytes")
    assert conn.synthetic_disconnect == {
        "type": "websocket.disconnect",
        "code": 1009,
        "reason": "message exceeds the limit of 10 bytes",
    }
    record = conn.record(0)
    assert (record.code, record.initiator) == (1009, "middleware")
    # The app's usual close after a disconnect is dropped, not an error.
    assert conn.app_closes(close(1000)) is None
    assert "closeguard already closed" in str(conn.app_sends_after_close("websocket.send"))


def test_exception_after_accept_becomes_a_generic_1011() -> None:
    conn = opened()
    error = ValueError("password=hunter2")
    assert not conn.is_ordinary_end(error)
    assert conn.app_raised(error) == close(1011, "internal error")
    record = conn.record(0)
    assert (record.code, record.initiator, record.exception) == (1011, "middleware", "ValueError")


def test_exception_names_are_qualified() -> None:
    conn = opened()
    conn.app_raised(InvalidCloseCode("x", 1))
    assert conn.record(0).exception == "middleware.codes.InvalidCloseCode"


def test_exception_before_accept_sends_nothing() -> None:
    conn = make()
    assert conn.app_raised(RuntimeError()) is None
    record = conn.record(0)
    assert (record.accepted, record.code, record.exception) == (False, None, "RuntimeError")


def test_exception_after_the_apps_close_sends_nothing_more() -> None:
    conn = opened()
    conn.app_closes(close(4000))
    assert conn.app_raised(RuntimeError()) is None
    assert conn.record(0).code == 4000


def test_cancellation_is_recorded_but_never_answered_with_a_send() -> None:
    conn = opened()
    assert conn.app_raised(asyncio.CancelledError()) is None
    record = conn.record(0)
    assert record.exception == "asyncio.exceptions.CancelledError"
    assert record.code is None


@pytest.mark.parametrize("error", [WebSocketDisconnect(1000), ConnectionResetError()])
def test_disconnect_exceptions_after_the_end_are_ordinary(error: BaseException) -> None:
    conn = opened()
    assert not conn.is_ordinary_end(error)  # still open: a raised disconnect is an app error
    conn.server_disconnects({"type": "websocket.disconnect", "code": 1001})
    assert conn.is_ordinary_end(error)


def test_a_failed_server_send_means_the_peer_is_gone() -> None:
    conn = opened()
    conn.server_send_failed()
    record = conn.record(0)
    assert (record.code, record.initiator) == (1006, "client")
    assert conn.is_ordinary_end(WebSocketDisconnect(1006))


def test_return_without_close_gets_1000() -> None:
    conn = opened()
    assert conn.app_returned() == close(1000, "")
    assert conn.record(0).initiator == "middleware"


@pytest.mark.parametrize("setup", ["closed", "disconnected", "never accepted"])
def test_return_after_the_end_sends_nothing(setup: str) -> None:
    conn = make() if setup == "never accepted" else opened()
    if setup == "closed":
        conn.app_closes(close(4000))
    elif setup == "disconnected":
        conn.server_disconnects({"type": "websocket.disconnect", "code": 1000})
    assert conn.app_returned() is None


def test_failed_closing_send_is_recorded_as_abnormal() -> None:
    conn = opened()
    conn.app_raised(RuntimeError())
    conn.close_send_failed()
    record = conn.record(0)
    assert (record.code, record.initiator, record.exception) == (1006, "client", "RuntimeError")


def test_the_fields_the_log_line_is_made_from_are_the_records_in_its_order() -> None:
    """The log line is made from ``fields`` without building a CloseRecord; a hook gets the
    record built from the same dict, so the two cannot drift apart."""
    conn = opened()
    conn.app_closes(close(4000, "bye"))
    fields = conn.fields(0.5, (1, 2, 3, 4))
    assert list(fields) == list(FIELD_NAMES)
    record = conn.record(0.5, (1, 2, 3, 4))
    assert record.as_dict() == fields
    assert (record.messages_received, record.bytes_received) == (1, 2)
    assert (record.messages_sent, record.bytes_sent) == (3, 4)


@pytest.mark.parametrize(
    ("client", "shown"),
    [
        (("127.0.0.1", 5000), "127.0.0.1:5000"),
        (["::1", 443], "[::1]:443"),  # ASGI allows any two-item iterable; servers give these
        (None, None),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        (("unix-socket",), None),
    ],
)
def test_the_client_is_made_text_for_the_record(client: object, shown: str | None) -> None:
    conn = Connection(
        connection_id="c1",
        path="/ws",
        client=client,
        max_message_size=None,
        replace_invalid=False,
    )
    assert conn.fields(0, (0, 0, 0, 0))["client"] == shown
