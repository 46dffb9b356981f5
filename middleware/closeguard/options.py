"""The middleware's options, each checked when the middleware is made: a mistake names itself
there, rather than at the end of every connection, where it would cost the records."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeAlias

from starlette.types import Scope

from .closelog import LOGGER_NAME

__all__ = [
    "LIMIT_RULE",
    "MAX_DRAIN_WINDOW",
    "MAX_LIMIT",
    "MaxMessageSize",
    "check_options",
    "limit_for",
]

#: A fixed limit in bytes, a per-connection choice (say, by path), or None for no limit.
MaxMessageSize: TypeAlias = "int | Callable[[Scope], int | None] | None"

#: The largest limit one may set: any larger is no limit in practice, and the 1009 reason
#: naming it must still fit in 123 bytes.
MAX_LIMIT = 2**62
LIMIT_RULE = f"a whole number of bytes from 1 to {MAX_LIMIT}"

#: The longest drain window one may set: an hour is past any deploy's grace period.
MAX_DRAIN_WINDOW = 3600.0


def check_options(
    app: object,
    *,
    max_message_size: object,
    invalid_close: object,
    reraise: object,
    logger: object,
    drain_window: object,
    drain_file: object,
) -> None:
    """Raise TypeError or ValueError naming the first option that is wrong, and what it may be."""
    if not callable(app):
        raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
    if invalid_close not in ("raise", "replace"):
        raise ValueError(f"invalid_close must be 'raise' or 'replace', got {invalid_close!r}")
    if not (callable(max_message_size) or valid_limit(max_message_size)):
        raise ValueError(
            f"max_message_size must be {LIMIT_RULE}, a callable scope -> int | None, "
            f"or None for no limit; got {max_message_size!r}"
        )
    if isinstance(drain_window, bool) or not (
        isinstance(drain_window, (int, float)) and 0 <= drain_window <= MAX_DRAIN_WINDOW
    ):
        raise ValueError(
            f"drain_window must be a number of seconds from 0 to {MAX_DRAIN_WINDOW:g}, "
            f"got {drain_window!r}"
        )
    if drain_file is not None and not isinstance(drain_file, (str, os.PathLike)):
        raise TypeError(f"drain_file must be a path (str or os.PathLike), got {drain_file!r}")
    if not isinstance(reraise, bool):
        raise TypeError(f"reraise must be True or False, got {reraise!r}")
    if logger is not None and not isinstance(logger, logging.Logger):
        raise TypeError(
            f"logger must be a logging.Logger, such as logging.getLogger({LOGGER_NAME!r}), "
            f"or None for that one; got {logger!r}"
        )


def limit_for(max_message_size: MaxMessageSize, scope: Scope) -> int | None:
    """The limit for one connection: a callable's answer is checked as the option was."""
    if not callable(max_message_size):
        return max_message_size
    limit = max_message_size(scope)
    if not valid_limit(limit):
        raise ValueError(
            f"max_message_size({scope.get('path')!r}) returned {limit!r}; "
            f"it must return {LIMIT_RULE}, or None for no limit"
        )
    return limit


def valid_limit(limit: object) -> bool:
    return limit is None or (
        isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= MAX_LIMIT
    )
