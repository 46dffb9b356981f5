"""The app a server runs: ``uvicorn app.main:app`` or ``python -m app``.

Importing this module reads the settings (a bad value exits with one line) and applies the
logging configuration, so plain ``uvicorn app.main:app`` logs JSON too: uvicorn imports the
app before it logs "Started server process", and the named uvicorn loggers are replaced.
"""

from __future__ import annotations

from . import logs
from .service import create_app
from .settings import load_or_exit

__all__ = ["app", "settings"]

settings = load_or_exit()
logs.configure(settings)
app = create_app(settings)
