"""How a record becomes a log line: level, escaping, fields."""

from __future__ import annotations

import dataclasses
import io
import logging

import pytest

from middleware import CloseRecord
from middleware.closelog import level_for, log_record, printable

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


@pytest.mark.parametrize(
    ("changes", "level"),
    [
        ({}, logging.INFO),
        ({"code": 4000}, logging.INFO),
        ({"code": 1001, "initiator": "client"}, logging.INFO),
        ({"code": 1008}, logging.WARNING),
        ({"code": 1009, "initiator": "middleware"}, logging.WARNING),
        ({"code": 1011}, logging.WARNING),
        ({"requested_code": 1005}, logging.WARNING),
        ({"code": 1011, "exception": "RuntimeError"}, logging.ERROR),
        ({"accepted": False, "code": None, "exception": "RuntimeError"}, logging.ERROR),
        ({"accepted": False, "code": None, "http_status": 403}, logging.INFO),
    ],
)
def test_levels(changes: dict[str, object], level: int) -> None:
    assert level_for(dataclasses.replace(BASE, **changes).as_dict()) == level  # type: ignore[arg-type]


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
def test_printable_escapes_only_what_could_act(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_a_forged_line_stays_inside_one_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("closeguard.test.forge")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(stream))
    forged = dataclasses.replace(
        BASE,
        path="/ws\nINFO closeguard websocket /admin closed",
        reason="bye\n\x1b[2KERROR fake",
        initiator="client",
    )
    log_record(logger, forged.as_dict())
    output = stream.getvalue()
    assert output.count("\n") == 1
    assert "\x1b" not in output
    assert "/ws\\nINFO closeguard" in output


def test_fields_go_as_extra_with_strings_escaped() -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("closeguard.test.extra")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    log_record(logger, dataclasses.replace(BASE, reason="a\nb").as_dict())
    [record] = seen
    for name, value in dataclasses.asdict(BASE).items():
        if name != "reason":
            assert getattr(record, name) == value
    assert record.reason == "a\\nb"  # type: ignore[attr-defined]
    assert record.getMessage().startswith("websocket /ws closed: code=1000 reason='a\\nb'")


def test_nothing_is_formatted_when_the_level_is_off() -> None:
    logger = logging.getLogger("closeguard.test.off")
    logger.setLevel(logging.ERROR)
    calls: list[str] = []

    class Path(str):
        def isprintable(self) -> bool:
            calls.append("formatted")
            return True

    log_record(logger, dataclasses.replace(BASE, path=Path("/ws")).as_dict())
    assert calls == []
