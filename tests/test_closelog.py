"""How a close record becomes one log line: its level, its words, its fields, its escaping."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from closeguard import CloseRecord
from closeguard.closelog import escaped, level_for, log_record

BASE = CloseRecord(
    connection_id="abc",
    path="/ws",
    client="127.0.0.1:1",
    accepted=True,
    code=1000,
    reason="",
    initiator="app",
    requested_code=None,
    violation=None,
    exception=None,
    http_status=None,
    duration=0.25,
    messages_received=1,
    messages_sent=2,
    bytes_received=3,
    bytes_sent=4,
)


def with_(**changes: Any) -> CloseRecord:
    return BASE._replace(**changes)


class Keep(logging.Handler):
    """A real handler that keeps every LogRecord it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, Keep]]:
    """A logger of its own at INFO, not propagating, with a :class:`Keep` handler."""
    logger = logging.getLogger("closeguard.test.closelog")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def logged(kept: tuple[logging.Logger, Keep], record: CloseRecord) -> logging.LogRecord:
    logger, handler = kept
    log_record(logger, record)
    [line] = handler.records
    return line


# Levels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "level"),
    [
        ({}, logging.INFO),
        ({"code": 4000}, logging.INFO),
        ({"code": 1001, "initiator": "client"}, logging.INFO),
        ({"code": 1006, "initiator": "client"}, logging.INFO),
        ({"code": 1000, "initiator": "middleware"}, logging.INFO),
        ({"code": 1012, "initiator": "server"}, logging.INFO),  # a server's shutdown
        ({"code": None, "initiator": "server"}, logging.INFO),  # a task cancelled under it
        ({"accepted": False, "code": None, "http_status": 403}, logging.INFO),
        ({"accepted": False, "code": None, "initiator": "client"}, logging.INFO),
        ({"code": 1008}, logging.WARNING),
        ({"code": 1009, "initiator": "middleware"}, logging.WARNING),
        ({"code": 1011}, logging.WARNING),
        ({"code": 1011, "initiator": "client"}, logging.INFO),  # the client's own failure
        ({"code": 1011, "initiator": "middleware"}, logging.WARNING),
        ({"requested_code": 1005}, logging.WARNING),
        ({"violation": "the server failed to send close code 1000"}, logging.WARNING),
        ({"code": None, "violation": "the server failed to send it"}, logging.WARNING),
        ({"code": 1011, "exception": "RuntimeError"}, logging.ERROR),
        ({"code": 1011, "exception": "X", "requested_code": 999, "violation": "v"}, logging.ERROR),
        ({"accepted": False, "code": None, "exception": "RuntimeError"}, logging.ERROR),
    ],
)
def test_levels(changes: dict[str, Any], level: int) -> None:
    assert level_for(with_(**changes)) == level


def test_the_line_is_logged_at_the_records_level(kept: tuple[logging.Logger, Keep]) -> None:
    line = logged(kept, with_(code=1011, exception="RuntimeError"))
    assert (line.levelno, line.levelname) == (logging.ERROR, "ERROR")


# Words ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {},
            "websocket /ws closed: code=1000 reason='' initiator=app"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {"code": 1001, "reason": "bye", "initiator": "client"},
            "websocket /ws closed: code=1001 reason='bye' initiator=client"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {"accepted": False, "code": None, "http_status": 403},
            "websocket /ws refused with HTTP 403: code=None reason='' initiator=app"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {"accepted": False, "code": None, "initiator": "client"},
            "websocket /ws ended before accept: code=None reason='' initiator=client"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {"code": None, "initiator": "server"},
            "websocket /ws closed: code=None reason='' initiator=server"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {"requested_code": 1005, "violation": "close code 1005 is reserved"},
            "websocket /ws closed: code=1000 reason='' initiator=app"
            " requested_code=1005 (close code 1005 is reserved)"
            " duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
        (
            {
                "code": 1011,
                "reason": "internal error",
                "initiator": "middleware",
                "exception": "ValueError",
            },
            "websocket /ws closed: code=1011 reason='internal error' initiator=middleware"
            " exception=ValueError duration=0.250s received=1/3B sent=2/4B id=abc",
        ),
    ],
)
def test_the_message_says_what_happened(
    kept: tuple[logging.Logger, Keep], changes: dict[str, Any], message: str
) -> None:
    assert logged(kept, with_(**changes)).getMessage() == message


# Fields --------------------------------------------------------------------------------------


def test_every_field_arrives_on_the_log_record(kept: tuple[logging.Logger, Keep]) -> None:
    record = with_(
        code=1008,
        reason="policy",
        initiator="app",
        requested_code=1006,
        violation="close code 1006 is reserved for local use",
        http_status=None,
        duration=1.5,
    )
    line = logged(kept, record)
    for name, value in record.as_dict().items():
        assert getattr(line, name) == value, name
    assert line.name == "closeguard.test.closelog"


def test_the_fields_are_the_records_own_values_not_strings(
    kept: tuple[logging.Logger, Keep],
) -> None:
    """A JSON formatter writes them as they are: ints stay ints, None stays None."""
    line = logged(kept, with_(code=None, initiator="server", accepted=False))
    assert line.code is None  # type: ignore[attr-defined]
    assert line.accepted is False  # type: ignore[attr-defined]
    assert line.bytes_sent == 4  # type: ignore[attr-defined]
    assert line.duration == 0.25  # type: ignore[attr-defined]


# Escaping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain words", "plain words"),
        ("ünïcode ✓", "ünïcode ✓"),
        ("two\nlines", "two\\nlines"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("cr\rlf", "cr\\rlf"),
        ("sep\u2028line", "sep\\u2028line"),
        ("typed \\n, not a newline", "typed \\\\n, not a newline"),
    ],
)
def test_escaped_escapes_only_what_could_act(raw: str, shown: str) -> None:
    assert escaped(raw) == shown


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("\x1b[2Kred", "\\x1b[2Kred"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_path_and_reason_are_escaped_in_fields_and_words(
    kept: tuple[logging.Logger, Keep], raw: str, shown: str
) -> None:
    line = logged(kept, with_(path="/ws/" + raw, reason=raw, initiator="client"))
    assert line.path == "/ws/" + shown  # type: ignore[attr-defined]
    assert line.reason == shown  # type: ignore[attr-defined]
    message = line.getMessage()
    assert message.startswith(f"websocket /ws/{shown} closed: code=1000 reason='{shown}'")
    assert "\n" not in message
    assert "\x1b" not in message


def test_a_forwarded_client_is_escaped(kept: tuple[logging.Logger, Keep]) -> None:
    """uvicorn's --proxy-headers takes the host from X-Forwarded-For as the client sent it."""
    line = logged(kept, with_(client="203.0.113.7\x1b[2K\nforged"))
    assert line.client == "203.0.113.7\\x1b[2K\\nforged"  # type: ignore[attr-defined]


def test_no_client_stays_none(kept: tuple[logging.Logger, Keep]) -> None:
    """A server that names no client (a Unix socket) leaves the field None, not 'None'."""
    line = logged(kept, with_(client=None))
    assert line.client is None  # type: ignore[attr-defined]


def test_the_other_fields_are_left_as_they_are(kept: tuple[logging.Logger, Keep]) -> None:
    line = logged(kept, with_(path="/a\nb", reason="c\nd"))
    assert line.connection_id == "abc"  # type: ignore[attr-defined]
    assert line.client == "127.0.0.1:1"  # type: ignore[attr-defined]


def test_a_forged_line_stays_inside_one_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("closeguard.test.forge")
    handler = logging.StreamHandler(stream)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        log_record(
            logger,
            with_(
                path="/ws\nINFO closeguard websocket /admin closed",
                reason="bye\n\x1b[2KERROR fake",
                initiator="client",
            ),
        )
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert output.count("\n") == 1
    assert "\x1b" not in output
    assert "/ws\\nINFO closeguard" in output


# Tracebacks ----------------------------------------------------------------------------------


def test_no_traceback_unless_one_is_given(kept: tuple[logging.Logger, Keep]) -> None:
    line = logged(kept, with_(code=1011, exception="RuntimeError"))
    assert not line.exc_info
    assert line.exc_text is None
    assert "Traceback" not in logging.Formatter().format(line)


def test_the_traceback_is_attached_when_given(kept: tuple[logging.Logger, Keep]) -> None:
    logger, handler = kept
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = exc
    log_record(logger, with_(code=1011, exception="RuntimeError"), error)
    [line] = handler.records
    assert line.exc_info is not None
    assert line.exc_info[1] is error
    text = logging.Formatter().format(line)
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: boom" in text


# The LogRecord itself -------------------------------------------------------------------------


def test_no_field_shadows_a_log_record_attribute(kept: tuple[logging.Logger, Keep]) -> None:
    """The fields go onto the LogRecord at once, without logging's own check for each
    ``extra`` key: none of them may replace what logging or a formatter reads there."""
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None, "f", "stack")
    plain.getMessage()
    taken = set(vars(plain)) | {"message", "asctime", "taskName"}
    assert not taken & set(CloseRecord._fields)
    line = logged(kept, BASE)
    assert line.name == kept[0].name
    assert line.levelno == logging.INFO
    assert line.funcName == "log_record"
    assert line.getMessage().startswith("websocket /ws closed: code=1000")


def test_the_apps_record_factory_and_the_loggers_filters_apply(
    kept: tuple[logging.Logger, Keep],
) -> None:
    """What OpenTelemetry's logging instrumentation does: a factory that adds trace ids."""
    logger, handler = kept
    made = logging.getLogRecordFactory()

    def with_trace_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        line = made(*args, **kwargs)
        line.otelTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        return line

    logging.setLogRecordFactory(with_trace_id)
    quiet = logging.Filter("elsewhere")
    try:
        log_record(logger, BASE)
        logger.addFilter(quiet)
        log_record(logger, with_(connection_id="filtered"))
    finally:
        logging.setLogRecordFactory(made)
        logger.removeFilter(quiet)
    [line] = handler.records
    assert line.otelTraceID == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
    assert line.connection_id == "abc"  # type: ignore[attr-defined]


# Nothing built for a disabled level ----------------------------------------------------------


def test_nothing_is_built_when_the_level_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("closeguard.test.off")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    calls: list[str] = []

    class Path(str):
        def isprintable(self) -> bool:
            calls.append("escaped")
            return True

    def as_dict(self: CloseRecord) -> dict[str, Any]:
        calls.append("as_dict")
        return {}

    def make_record(*args: object, **kwargs: object) -> None:
        calls.append("makeRecord")

    monkeypatch.setattr(CloseRecord, "as_dict", as_dict)
    monkeypatch.setattr(logger, "makeRecord", make_record)
    try:
        # WARNING (a 1011 with no exception) and INFO records: both below ERROR.
        log_record(logger, with_(path=Path("/ws"), code=1011))
        log_record(logger, with_(path=Path("/ws")), RuntimeError("unused"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert calls == []
    assert handler.records == []
