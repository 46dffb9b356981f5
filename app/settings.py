"""Every environment variable the service reads, read here and nowhere else.

A bad value stops the process at start with one line naming the variable, the value and what
is allowed: a typo in a deployment should fail loudly, not run with a default.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from closeguard import WebSocketCloseMiddleware
from closeguard.options import MAX_DRAIN_WINDOW

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "Settings", "SettingsError", "load", "load_or_exit"]

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The middleware's own defaults, read from its signature so the two can never disagree.
DEFAULT_MAX_MESSAGE_SIZE: int = (
    inspect.signature(WebSocketCloseMiddleware).parameters["max_message_size"].default
)
DEFAULT_DRAIN_WINDOW: float = (
    inspect.signature(WebSocketCloseMiddleware).parameters["drain_window"].default
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
    #: The file whose appearance starts a drain in every worker (a preStop hook touches it).
    drain_file: str | None = None
    #: Seconds over which a drain closes the open WebSockets.
    drain_window: float = DEFAULT_DRAIN_WINDOW


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


def _drain_file(value: str) -> str:
    # A directory that is not there makes the preStop hook's touch fail, and the pod would
    # then end without a drain: say so at start, not at the next deploy.
    folder = os.path.dirname(os.path.abspath(value))
    if os.path.isdir(folder) and not os.path.isdir(value):
        return value
    raise SettingsError(
        f"CLOSEGUARD_DRAIN_FILE={value!r} is not allowed: use a file path in an existing "
        "directory (the file itself need not exist; its appearance starts the drain)"
    )


def _drain_window(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if 0 <= seconds <= MAX_DRAIN_WINDOW:
        return seconds
    raise SettingsError(
        f"CLOSEGUARD_DRAIN_WINDOW={value!r} is not allowed: use a number of seconds from 0 to "
        f"{MAX_DRAIN_WINDOW:g}, e.g. {DEFAULT_DRAIN_WINDOW:g}"
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
    if value := environ.get("CLOSEGUARD_DRAIN_FILE"):
        settings = replace(settings, drain_file=_drain_file(value))
    if value := environ.get("CLOSEGUARD_DRAIN_WINDOW"):
        settings = replace(settings, drain_window=_drain_window(value))
    return settings


def load_or_exit() -> Settings:
    """The settings from this process's environment, or exit with one line saying what is wrong."""
    try:
        return load(os.environ)
    except SettingsError as error:
        raise SystemExit(f"closeguard: {error}") from None
