"""closeguard's records as JSON lines in ``$CLOSEGUARD_TEST_LOG``: how the apps the wire tests
serve (tests/wire_app.py, tests/framework_apps/) hand their records back to the test."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from closeguard import LOGGER_NAME
from closeguard.record import FIELD_NAMES


class JsonLinesHandler(logging.Handler):
    """Each log record's level, message, whether it carries a traceback, and the close-record
    fields, as one JSON line."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        line: dict[str, Any] = {
            "level": record.levelname,
            "message": record.getMessage(),
            "traceback": record.exc_info is not None,
        }
        line.update({name: getattr(record, name, None) for name in FIELD_NAMES})
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def write_records_to_test_log() -> None:
    """Send closeguard's records to ``$CLOSEGUARD_TEST_LOG``, when it is set."""
    path = os.environ.get("CLOSEGUARD_TEST_LOG")
    if not path:
        return
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.addHandler(JsonLinesHandler(path))
