"""closeguard: WebSocket close semantics done right, for any ASGI app.

``from closeguard import WebSocketCloseMiddleware`` and mount it; the rest of this package is
what its records, errors and rules are made of.
"""

from __future__ import annotations

from importlib import metadata

from .asgi import MaxMessageSize, WebSocketCloseMiddleware, connection_id
from .closelog import LOGGER_NAME
from .codes import (
    MAX_REASON_BYTES,
    RETRY_CONTRACT,
    CloseCode,
    CloseContract,
    CodeClass,
    InvalidCloseCode,
    InvalidCloseReason,
    RetryAdvice,
    check_close,
    classify,
    describe,
    name_of,
    substitute_close,
    truncate_utf8,
)
from .connection import CloseAlreadySent
from .drain import draining, start_drain
from .record import CloseRecord, Initiator

try:
    #: The installed distribution's version: pyproject.toml is the one place it is written.
    __version__ = metadata.version("closeguard")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [  # noqa: RUF022 - plainly sorted, as users read it
    "CloseAlreadySent",
    "CloseCode",
    "CloseContract",
    "CloseRecord",
    "CodeClass",
    "Initiator",
    "InvalidCloseCode",
    "InvalidCloseReason",
    "LOGGER_NAME",
    "MAX_REASON_BYTES",
    "MaxMessageSize",
    "RETRY_CONTRACT",
    "RetryAdvice",
    "WebSocketCloseMiddleware",
    "check_close",
    "classify",
    "connection_id",
    "describe",
    "draining",
    "name_of",
    "start_drain",
    "substitute_close",
    "truncate_utf8",
]
