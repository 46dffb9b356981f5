"""How a close record becomes one log line: its level, its words, and its structured fields.

It works on the record's fields as a dict (``CloseRecord.as_dict()``'s shape), which the
middleware builds for every connection: the :class:`CloseRecord` itself is made only when an
``on_close`` hook wants one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .codes import CloseCode

__all__ = ["LOGGER_NAME", "MESSAGE", "level_for", "log_record", "printable"]

#: A stable name, so an app can route or silence closeguard's records in its logging config.
LOGGER_NAME = "closeguard"

#: %-style, so nothing is formatted for a record no handler wants.
MESSAGE = "websocket %s %s: code=%s reason=%s initiator=%s%s"

#: Codes that say a peer misbehaved or the app turned it away: worth a look, not a page.
NOTABLE_CODES = frozenset(
    {CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG, CloseCode.INTERNAL_ERROR}
)


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped, so no value can forge a log line.

    Reasons and paths come from clients; a newline or an ANSI escape in them must show up as
    ``\\n`` or ``\\x1b``, not act.
    """
    if text.isprintable() and "\\" not in text:
        return text
    # Backslashes are escaped too, so a typed "\\n" never reads like an escaped newline.
    return repr(text)[1:-1]


def level_for(record: Mapping[str, Any]) -> int:
    """ERROR when the app failed, WARNING when a close was rejected, replaced or notable."""
    if record["exception"] is not None:
        return logging.ERROR
    if record["requested_code"] is not None or record["code"] in NOTABLE_CODES:
        return logging.WARNING
    return logging.INFO


def _outcome(record: Mapping[str, Any]) -> str:
    if record["accepted"]:
        return "closed"
    if record["http_status"] is not None:
        return f"refused with HTTP {record['http_status']}"
    return "ended before accept"


def _details(record: Mapping[str, Any]) -> str:
    parts = []
    if record["requested_code"] is not None or record["violation"] is not None:
        parts.append(f" requested_code={record['requested_code']} ({record['violation']})")
    if record["exception"] is not None:
        parts.append(f" exception={record['exception']}")
    parts.append(
        f" duration={record['duration']:.3f}s"
        f" received={record['messages_received']}/{record['bytes_received']}B"
        f" sent={record['messages_sent']}/{record['bytes_sent']}B"
        f" id={record['connection_id']}"
    )
    return "".join(parts)


def log_record(
    logger: logging.Logger,
    record: Mapping[str, Any],
    exc_info: BaseException | None = None,
) -> None:
    """Write the record (its fields, as ``CloseRecord.as_dict()`` gives them) once: the fields
    go as ``extra``, the strings escaped.

    The LogRecord is made here and handed to ``logger.handle``, as ``Logger.log`` would, but
    without its walk up the stack for the caller (the caller is always this function) and
    without checking each field against LogRecord's own names (none of them clash).
    """
    level = level_for(record)
    if not logger.isEnabledFor(level):
        return
    raw_path, raw_reason = record["path"], record["reason"]
    path, reason = printable(raw_path), printable(raw_reason)
    # The caller's dict is left as it is; a copy only when a string had to be escaped.
    fields = (
        record
        if path is raw_path and reason is raw_reason
        else {
            **record,
            "path": path,
            "reason": reason,
        }
    )
    args = (
        path,
        _outcome(record),
        record["code"],
        repr(raw_reason),
        record["initiator"],
        _details(record),
    )
    entry = logger.makeRecord(
        logger.name,
        level,
        __file__,
        _LINE,
        MESSAGE,
        args,
        None if exc_info is None else (type(exc_info), exc_info, exc_info.__traceback__),
        "log_record",
    )
    entry.__dict__.update(fields)
    logger.handle(entry)


#: Where a close record is said to be logged from.
_LINE = log_record.__code__.co_firstlineno
