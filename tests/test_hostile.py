"""Hostile input under real uvicorn: none of it forges a log line, leaks into a 1011 reason, or
breaks the middleware.

Clients send close reasons with newlines, ANSI escapes and invalid UTF-8 (through a raw socket,
since a real client library refuses to), 16 MiB messages, and request paths with percent-encoded
control characters; the app closes with such reasons and fails with client data in its
exception. The "closeguard" logger is read through a plain-text formatter, as a log file would
hold it: every record must be one line, with the hostile characters escaped. After each attack
the same server must still close the next connection normally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from starlette.types import Receive, Scope, Send

from bench.rawws import RawClient, Wire
from closeguard import LOGGER_NAME, CloseRecord, WebSocketCloseMiddleware
from tests.conftest import UVICORN_WS_IMPLEMENTATIONS, Records, serve, talk
from tests.fuzz_support import SECRET

FORGED = "\nCRITICAL closeguard forged line"
ANSI = "\x1b[31m\x1b[2J"
MiB = 1024 * 1024
#: uvicorn's legacy implementation holds a connection for its 10 s close timeout in some of
#: these cases, so the slow-to-end attacks run under the two current implementations.
CURRENT_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")


class PlainLines(logging.Handler):
    """What a plain-text log file would hold: each record formatted, traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.texts.append(self.format(record))


@pytest.fixture
def log() -> Iterator[PlainLines]:
    logger = logging.getLogger(LOGGER_NAME)
    handler = PlainLines()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def assert_one_safe_line(log: PlainLines, path_part: str | None = None) -> str:
    """Every closeguard record so far is exactly one line with no raw control character."""
    assert log.texts, "closeguard logged nothing"
    for text in log.texts:
        assert "\n" not in text, f"a log record spans lines: {text!r}"
        assert "\r" not in text, text
        assert "\x1b" not in text, f"a raw escape in the log: {text!r}"
        assert "forged line" not in text or "\\n" in text, text
    return log.texts[-1]


async def hostile_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Paths: /echo (until the client leaves), /close/<reason key>, /boom, anything else: 1000."""
    path: str = scope["path"]
    await receive()
    await send({"type": "websocket.accept"})
    if path == "/echo":
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            size = len(text.encode()) if text is not None else len(message["bytes"])
            await send({"type": "websocket.send", "text": f"got {size}"})
    elif path.startswith("/close/"):
        await send({"type": "websocket.close", "code": 4001, "reason": APP_REASONS[path[7:]]})
    elif path == "/boom":
        message = await receive()
        raise ValueError(f"cannot handle {message.get('text')!r} ({SECRET})")
    else:
        await send({"type": "websocket.close", "code": 1000, "reason": "ok"})


APP_REASONS = {
    "newline": f"line one{FORGED}",
    "ansi": f"{ANSI}red",
    "crlf": "a\r\nINFO forged",
    "surrogate": "half \ud83d a character",
}


def guarded(records: Records, **options: object) -> WebSocketCloseMiddleware:
    return WebSocketCloseMiddleware(hostile_app, on_close=records, **options)  # type: ignore[arg-type]


async def still_works(url: str) -> None:
    seen = await talk(f"{url}/after")
    assert seen.close == (1000, "ok"), "the middleware stopped closing connections normally"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def only(records: Records, path: str, timeout: float = 5.0) -> CloseRecord:
    mine = [record for record in records.wait_for(1, timeout) if record.path == path]
    assert len(mine) == 1, f"{len(mine)} records for {path!r}"
    return mine[0]


# --- Close reasons from the client -----------------------------------------------------------


@pytest.mark.parametrize("ws_impl", UVICORN_WS_IMPLEMENTATIONS)
async def test_client_reason_with_newline_and_ansi_is_recorded_whole_and_logged_escaped(
    ws_impl: str, log: PlainLines
) -> None:
    records = Records()
    reason = f"bye{FORGED}{ANSI}"
    with serve(guarded(records), ws_impl) as url:
        seen = await talk(f"{url}/echo", close=(4000, reason))
        record = only(records, "/echo")
        await still_works(url)
    assert seen.close == (4000, reason)  # the server echoes it, as RFC 6455 allows
    assert (record.code, record.reason, record.initiator) == (4000, reason, "client")
    line = assert_one_safe_line(log)
    first = next(text for text in log.texts if "/echo" in text)
    assert "\\n" in first, first
    assert "\\x1b" in first, first
    assert line.endswith(records[-1].connection_id)


@pytest.mark.parametrize("ws_impl", UVICORN_WS_IMPLEMENTATIONS)
async def test_client_reason_with_invalid_utf8_is_recorded_sanely(
    ws_impl: str, log: PlainLines
) -> None:
    """A Close frame whose reason is not UTF-8: the server fails the connection (1007 or 1002);
    closeguard records a client close with a str reason and logs one escaped line."""
    records = Records()
    with serve(guarded(records), ws_impl) as url:
        conn = await RawClient.connect(port_of(url), "/echo")
        await conn.send_close(4000, b"bad \xff\xfe" + FORGED.encode() + ANSI.encode())
        wire = await conn.read_to_end(5, answer_close=False)
        # uvicorn's legacy implementation reports the end only after its 10 s close timeout.
        record = only(records, "/echo", timeout=15)
        await still_works(url)
    if wire.closes:  # legacy websockets may just drop TCP
        assert wire.closes[0].close_code in (1002, 1007), wire.closes
    assert record.initiator == "client"
    assert record.code in (1002, 1005, 1006, 1007), record
    assert isinstance(record.reason, str)
    record.reason.encode("utf-8")  # valid text, whatever the server made of the bytes
    assert "forged line" not in record.reason or FORGED not in repr(record.reason)
    assert_one_safe_line(log)


# --- Close reasons from the app --------------------------------------------------------------


@pytest.mark.parametrize("key", ["newline", "ansi", "crlf"])
@pytest.mark.parametrize("ws_impl", UVICORN_WS_IMPLEMENTATIONS)
async def test_app_reason_with_control_characters_goes_out_intact_and_logs_escaped(
    ws_impl: str, key: str, log: PlainLines
) -> None:
    records = Records()
    with serve(guarded(records), ws_impl) as url:
        seen = await talk(f"{url}/close/{key}")
        record = only(records, f"/close/{key}")
        await still_works(url)
    assert seen.close == (4001, APP_REASONS[key])  # valid UTF-8, under 123 bytes: allowed
    assert (record.code, record.reason, record.initiator) == (4001, APP_REASONS[key], "app")
    assert_one_safe_line(log)


@pytest.mark.parametrize(
    ("mode", "expected"), [("raise", (1011, "internal error")), ("replace", (4001, ""))]
)
async def test_app_reason_with_a_lone_surrogate_never_reaches_the_wire(
    mode: str, expected: tuple[int, str], log: PlainLines
) -> None:
    records = Records()
    with serve(guarded(records, invalid_close=mode), "websockets-sansio") as url:
        seen = await talk(f"{url}/close/surrogate")
        record = only(records, "/close/surrogate")
        await still_works(url)
    if mode == "replace":
        expected = (4001, APP_REASONS["surrogate"].encode("utf-8", "replace").decode())
    assert seen.close == expected
    assert record.requested_code == 4001
    assert record.violation is not None
    assert "surrogate" in record.violation
    assert_one_safe_line(log)


# --- Exceptions holding client data ----------------------------------------------------------


@pytest.mark.parametrize("reraise", [True, False])
@pytest.mark.parametrize("ws_impl", UVICORN_WS_IMPLEMENTATIONS)
async def test_exception_text_with_client_data_stays_out_of_the_1011(
    ws_impl: str, reraise: bool, log: PlainLines
) -> None:
    records = Records()
    payload = f"{FORGED}{ANSI} please leak me"
    with serve(guarded(records, reraise=reraise), ws_impl) as url:
        seen = await talk(f"{url}/boom", send=(payload,))
        record = only(records, "/boom")
        await still_works(url)
    assert seen.close == (1011, "internal error")  # the fixed generic reason, nothing else
    assert (record.code, record.reason, record.exception) == (1011, "internal error", "ValueError")
    boom = next(r for r in log.records if r.getMessage().startswith("websocket /boom"))
    message = boom.getMessage()
    assert "\n" not in message, message
    assert "\x1b" not in message, message
    assert "leak me" not in message, "the exception text is in closeguard's own line"
    assert SECRET not in message
    if not reraise:
        # Swallowed: closeguard logs the traceback itself, once, after its one-line message.
        # The traceback is the exception's own text (as any server's log would show it).
        assert boom.exc_info is not None
    else:
        assert boom.exc_info is None  # the server logs the traceback it is given


# --- 16 MiB messages -------------------------------------------------------------------------


async def send_big(port: int, kind: str, size: int) -> Wire:
    conn = await RawClient.connect(port, "/echo")
    try:
        if kind == "bytes":
            await conn.send_bytes(b"x" * size)
        elif kind == "ascii":
            await conn.send_text("x" * size)
        else:
            await conn.send_text("é" * (size // 2))  # half the characters, all the bytes
    except ConnectionError:
        pass  # the server closed while the message was still going out; read what it sent
    return await conn.read_to_end(20)


@pytest.mark.parametrize("kind", ["bytes", "ascii", "multibyte"])
@pytest.mark.parametrize("ws_impl", CURRENT_IMPLEMENTATIONS)
async def test_16_mib_message_over_closeguards_limit_gets_its_1009(
    ws_impl: str, kind: str, log: PlainLines
) -> None:
    """uvicorn allows 32 MiB, closeguard 1 MiB (its default): closeguard's limit bites."""
    records = Records()
    with serve(guarded(records), ws_impl, ws_max_size=32 * MiB) as url:
        wire = await send_big(port_of(url), kind, 16 * MiB)
        record = only(records, "/echo")
        await still_works(url)
    assert wire.close == (1009, "message exceeds the limit of 1048576 bytes")
    assert len(wire.closes) == 1
    assert (record.code, record.initiator, record.messages_received) == (1009, "middleware", 0)
    assert_one_safe_line(log)


@pytest.mark.parametrize("ws_impl", CURRENT_IMPLEMENTATIONS)
async def test_16_mib_message_over_the_servers_smaller_limit_is_the_servers_1009(
    ws_impl: str, log: PlainLines
) -> None:
    """uvicorn allows 1 MiB, closeguard 32 MiB: the server's own 1009 bites first, and
    closeguard records what the server reported (legacy websockets reports 1006)."""
    records = Records()
    with serve(guarded(records, max_message_size=32 * MiB), ws_impl, ws_max_size=MiB) as url:
        wire = await send_big(port_of(url), "bytes", 16 * MiB)
        record = only(records, "/echo")
        await still_works(url)
    # The server closes while 16 MiB are still arriving: its 1009 may be lost to the TCP reset
    # that unread data causes, but nothing else may come.
    assert wire.close is None or wire.close[0] == 1009, wire.close
    assert record.initiator == "client"
    assert record.code in (1006, 1009), record
    assert_one_safe_line(log)


async def test_16_mib_message_under_both_limits_arrives_whole(log: PlainLines) -> None:
    records = Records()
    with serve(
        guarded(records, max_message_size=32 * MiB), "websockets-sansio", ws_max_size=32 * MiB
    ) as url:
        seen = await talk(
            f"{url}/echo", send=(b"x" * (16 * MiB),), expect_replies=1, close=(1000, "")
        )
        record = only(records, "/echo")
    assert seen.messages == (f"got {16 * MiB}",)
    assert (record.bytes_received, record.code, record.initiator) == (16 * MiB, 1000, "client")


# --- Paths with control characters -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "decoded"),
    [
        ("/ws/%0aINFO%20forged", "/ws/\nINFO forged"),
        ("/ws/%1b[31m", "/ws/\x1b[31m"),
        ("/ws/%0d%0aCRITICAL%20forged", "/ws/\r\nCRITICAL forged"),
        ("/ws/%e2%80%a8u2028", "/ws/\u2028u2028"),
    ],
)
@pytest.mark.parametrize("ws_impl", CURRENT_IMPLEMENTATIONS)
async def test_path_with_control_characters_cannot_forge_a_log_line(
    ws_impl: str, raw_path: str, decoded: str, log: PlainLines
) -> None:
    records = Records()
    with serve(guarded(records), ws_impl) as url:
        conn = await RawClient.connect(port_of(url), raw_path)
        wire = await conn.read_to_end(5)
        record = only(records, decoded)
        await still_works(url)
    assert wire.close == (1000, "ok")
    assert record.path == decoded  # the record keeps the truth; the log line escapes it
    line = next(text for text in log.texts if "closed: code=1000 reason='ok'" in text)
    for raw in ("\n", "\r", "\x1b", "\u2028"):
        assert raw not in line, line
    assert repr(decoded)[1:-1] in line, line
    assert_one_safe_line(log)


async def test_a_raw_client_sees_exactly_what_the_checks_assume() -> None:
    """The checks can fail: a bare app (no closeguard) that raises sends no Close frame."""

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError(f"bare {SECRET}")

    with serve(bare, "websockets-sansio") as url:
        conn = await RawClient.connect(port_of(url), "/x")
        wire = await asyncio.wait_for(conn.read_to_end(5), 10)
    assert wire.close is None
    assert wire.eof
