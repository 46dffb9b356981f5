"""The logging configuration: one dict for uvicorn's ``log_config`` and for the app's own import.

JSON (the default) is one object per line on stdout, uvicorn's lines included, with closeguard's
close-record fields as top-level keys (they arrive as ``extra``). The formatter is
python-json-logger's: escaping a client's reason or path is its job, not ours.
"""

from __future__ import annotations

import logging.config
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from closeguard.logconfig import config

from .settings import Settings

__all__ = ["configure", "logging_config"]

#: uvicorn adds an ANSI-coloured copy of some messages as ``extra``; a log pipeline wants neither.
DROPPED_FIELDS = ("color_message",)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(settings: Settings) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict that sends everything to stdout in one format."""
    if settings.log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            "reserved_attrs": [*RESERVED_ATTRS, *DROPPED_FIELDS],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return config(formatter, settings.log_level)


def configure(settings: Settings) -> None:
    """Apply :func:`logging_config` (again: it is idempotent)."""
    logging.config.dictConfig(logging_config(settings))
