"""Logging configurations that show closeguard's records under uvicorn: one step for an app that
has no logging of its own.

Under a bare ``uvicorn myapp:app`` only uvicorn's own loggers have handlers: a close record at
INFO goes nowhere, and a WARNING or ERROR one is printed bare by Python's last-resort handler.
Either configuration here sends every record (uvicorn's, closeguard's, the app's) to stdout at
INFO with its time, level and logger name:

    python -m closeguard.logconfig text > log-config.json    # or json: one object per line
    uvicorn myapp:app --log-config log-config.json

or, starting uvicorn from Python, ``uvicorn.run(app, log_config=closeguard.logconfig.TEXT)``.
The file is yours to edit (levels, handlers). closeguard itself never configures logging.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = ["JSON", "TEXT", "JSONFormatter", "config"]

#: The attributes every log record has; the rest came as ``extra`` (closeguard's record fields).
STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: uvicorn's ANSI-coloured copy of some messages, passed as ``extra``: a log pipeline wants none.
DROPPED_ATTRIBUTES = frozenset({"color_message"})


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``, then every
    field passed as ``extra`` (a close record's fields, as they are), and ``exc_info`` with the
    traceback when there is one. JSON escapes a client's newlines, so each record stays one line.

    The standard library's own, for apps without a JSON logging package.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD_ATTRIBUTES and key not in DROPPED_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def config(formatter: dict[str, Any], level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict: everything at ``level`` and above to stdout
    through ``formatter``.

    uvicorn's loggers lose their own handlers and pass their records up, so each line is
    written once, in one format.
    """
    uvicorn_loggers = {
        name: {"handlers": [], "propagate": True, "level": level}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": uvicorn_loggers,
        "root": {"handlers": ["stdout"], "level": level},
    }


#: ``2026-01-02 03:04:05,678 INFO closeguard: websocket /ws closed: code=1000 ...``
TEXT = config({"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})

#: ``{"time": ..., "level": "INFO", "logger": "closeguard", "message": ..., "code": 1000, ...}``
JSON = config({"()": "closeguard.logconfig.JSONFormatter"})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m closeguard.logconfig text|json``: the configuration as a JSON file on stdout,
    the form uvicorn's ``--log-config`` reads (it picks the parser by the ``.json`` suffix)."""
    args = list(sys.argv[1:] if argv is None else argv)
    configs = {"text": TEXT, "json": JSON}
    if len(args) != 1 or args[0] not in configs:
        print("usage: python -m closeguard.logconfig text|json > log-config.json", file=sys.stderr)
        return 2
    json.dump(configs[args[0]], sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
