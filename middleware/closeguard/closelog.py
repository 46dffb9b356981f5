"""How a close record becomes one log line: its level, its words, and its structured fields.

The same :class:`CloseRecord` the ``on_close`` hook gets is what is logged: its fields go to
the log record as ``extra``, so a JSON formatter writes them as they are.
"""

from __future__ import annotations

import logging
import sys
import traceback

from .codes import CloseCode
from .record import CloseRecord

__all__ = ["LOGGER_NAME", "MESSAGE", "escaped", "level_for", "log_record", "report_failure"]

#: A stable name, so an app can route or silence closeguard's records in its logging config.
LOGGER_NAME = "closeguard"

#: %-style, so nothing is formatted for a record no handler wants.
MESSAGE = "websocket %s %s: code=%s reason=%s initiator=%s%s"

#: Codes that say a peer misbehaved or the app turned it away: worth a look, not a page.
NOTABLE_CODES = frozenset(
    {CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG, CloseCode.INTERNAL_ERROR}
)


def escaped(text: str) -> str:
    """``text`` with every non-printable character escaped, so no value can forge a log line.

    Reasons and paths come from clients; a newline or an ANSI escape in them must show up as
    ``\\n`` or ``\\x1b``, not act.
    """
    if text.isprintable() and "\\" not in text:
        return text
    # Backslashes are escaped too, so a typed "\\n" never reads like an escaped newline.
    return repr(text)[1:-1]


def level_for(record: CloseRecord) -> int:
    """ERROR when the app failed, WARNING when a close was rejected, replaced, refused or
    notable; INFO otherwise, a server's shutdown included. A client's own 1011 is INFO: it
    says the client failed, which is no fault of this app to look into, and any client could
    otherwise fill the log's WARNINGs."""
    if record.exception is not None:
        return logging.ERROR
    if record.requested_code is not None or record.violation is not None:
        return logging.WARNING
    if record.code in NOTABLE_CODES and not (
        record.code == CloseCode.INTERNAL_ERROR and record.initiator == "client"
    ):
        return logging.WARNING
    return logging.INFO


def _outcome(record: CloseRecord) -> str:
    if record.accepted:
        return "closed"
    if record.http_status is not None:
        return f"refused with HTTP {record.http_status}"
    return "ended before accept"


def _details(record: CloseRecord) -> str:
    parts = []
    if record.requested_code is not None or record.violation is not None:
        parts.append(f" requested_code={record.requested_code} ({record.violation})")
    if record.exception is not None:
        parts.append(f" exception={record.exception}")
    parts.append(
        f" duration={record.duration:.3f}s"
        f" received={record.messages_received}/{record.bytes_received}B"
        f" sent={record.messages_sent}/{record.bytes_sent}B"
        f" id={record.connection_id}"
    )
    return "".join(parts)


def log_record(
    logger: logging.Logger, record: CloseRecord, exc_info: BaseException | None = None
) -> None:
    """Write the record as one log line: the words for people, every field as an attribute
    for structured handlers, with the strings a client chose escaped in both.

    Built with ``makeRecord`` and given to ``handle``, which is what ``logger.log`` does, less
    two things a record does not need: the walk up the stack for a caller that is always this
    function, and a check of each field against the LogRecord's own names, which none of them
    is (a test keeps it so). They were 4 µs of a connection's 22 in process, measured. The app's
    record factory (OpenTelemetry's trace ids) and the logger's filters still apply.

    Never raises: the connection is over, and a broken handler must not raise into the server;
    stderr hears of it, as logging's own ``handleError`` would tell it.
    """
    try:
        _log(logger, record, exc_info)
    except Exception:
        report_failure(f"closeguard: logging the close record of {record.connection_id}")


def _log(logger: logging.Logger, record: CloseRecord, exc_info: BaseException | None) -> None:
    level = level_for(record)
    if not logger.isEnabledFor(level):
        return
    fields = record.as_dict()
    fields["path"] = escaped(record.path)
    fields["reason"] = escaped(record.reason)
    if record.client is not None:  # X-Forwarded-For's host, behind a proxy: the client's text
        fields["client"] = escaped(record.client)
    words = (
        fields["path"],
        _outcome(record),
        record.code,
        repr(record.reason),
        record.initiator,
        _details(record),
    )
    error = None if exc_info is None else (type(exc_info), exc_info, exc_info.__traceback__)
    line = logger.makeRecord(logger.name, level, __file__, 0, MESSAGE, words, error, "log_record")
    line.__dict__.update(fields)
    logger.handle(line)


def report_failure(what: str) -> None:
    """Tell stderr, as logging's own handleError does, when the log itself cannot be used."""
    print(f"{what} failed:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
