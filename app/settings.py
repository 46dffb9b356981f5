"""Every environment variable the service reads, read here and nowhere else.

A bad value stops the process at start with one line naming the variable, the value and what
is allowed: a typo in a deployment should fail loudly, not run with a default.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from closeguard import WebSocketCloseMiddleware

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "Settings", "SettingsError", "load", "load_or_exit"]

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The middleware's own default, read from its signature so the two can never disagree.
DEFAULT_MAX_MESSAGE_SIZE: int = (
    inspect.signature(WebSocketCloseMiddleware).parameters["max_message_size"].default
)


class SettingsError(ValueError):
    """One environment variable has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    #: prometheus_client's multiprocess directory (``uvicorn --workers N``), or None.
    prometheus_multiproc_dir: str | None = None


def _max_message_size(value: str) -> int:
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    raise SettingsError(
        f"CLOSEGUARD_MAX_MESSAGE_SIZE={value!r} is not allowed: "
        f"use a positive whole number of bytes, e.g. {DEFAULT_MAX_MESSAGE_SIZE}"
    )


def _log_format(value: str) -> Literal["json", "text"]:
    normal = value.strip().lower()
    if normal == "json":
        return "json"
    if normal == "text":
        return "text"
    raise SettingsError(
        f"CLOSEGUARD_LOG_FORMAT={value!r} is not allowed: use one of {', '.join(LOG_FORMATS)}"
    )


def _log_level(value: str) -> str:
    normal = value.strip().upper()
    if normal in LOG_LEVELS:
        return normal
    raise SettingsError(
        f"CLOSEGUARD_LOG_LEVEL={value!r} is not allowed: use one of {', '.join(LOG_LEVELS)}"
    )


def _multiproc_dir(value: str) -> str:
    if os.path.isdir(value) and os.access(value, os.W_OK):
        return value
    raise SettingsError(
        f"PROMETHEUS_MULTIPROC_DIR={value!r} is not allowed: use an existing, writable, empty "
        "directory (one per server), or unset it to run one process"
    )


def load(environ: Mapping[str, str]) -> Settings:
    """Read the settings from ``environ``; raise :class:`SettingsError` for a bad value.

    An unset or empty variable means the default.
    """
    settings = Settings()
    if value := environ.get("CLOSEGUARD_MAX_MESSAGE_SIZE"):
        settings = replace(settings, max_message_size=_max_message_size(value))
    if value := environ.get("CLOSEGUARD_LOG_FORMAT"):
        settings = replace(settings, log_format=_log_format(value))
    if value := environ.get("CLOSEGUARD_LOG_LEVEL"):
        settings = replace(settings, log_level=_log_level(value))
    if value := environ.get("PROMETHEUS_MULTIPROC_DIR"):
        settings = replace(settings, prometheus_multiproc_dir=_multiproc_dir(value))
    return settings


def load_or_exit() -> Settings:
    """The settings from this process's environment, or exit with one line saying what is wrong."""
    try:
        return load(os.environ)
    except SettingsError as error:
        raise SystemExit(f"closeguard: {error}") from None
