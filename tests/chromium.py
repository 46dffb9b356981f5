"""Headless Chromium as the browser tests and docs/screenshot.py launch it, in one place.

The browser is Debian's ``chromium`` (``.ci/setup.d/20-chromium.sh`` installs it), driven by
playwright; playwright's own browser download is never used. The flags make it run as root in
a container without a display, and keep it from calling home while a test runs.
"""

from __future__ import annotations

import shutil

from playwright.sync_api import Browser, Playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def executable() -> str | None:
    """Debian's chromium on PATH, or None when it is not installed."""
    return shutil.which("chromium")


def launch(playwright: Playwright, path: str) -> Browser:
    """Chromium at ``path``, headless, with :data:`ARGS`."""
    return playwright.chromium.launch(executable_path=path, args=ARGS)
