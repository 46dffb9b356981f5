"""Connections whose record is not yet written, so that a process's exit writes them.

A server that exits without ending its app tasks (daphne at SIGTERM, granian's workers at
times) would otherwise leave those connections unrecorded.
"""

from __future__ import annotations

import multiprocessing.util
from collections.abc import Callable

from .connection import Connection

__all__ = ["forget", "remember"]

#: Each unwritten connection, with what writes its record at exit.
_unwritten: dict[Connection, Callable[[Connection], None]] = {}
_finalizer: multiprocessing.util.Finalize | None = None


def remember(conn: Connection, write_at_exit: Callable[[Connection], None]) -> None:
    """Keep ``conn`` until :func:`forget`; at the process's exit, ``write_at_exit(conn)``."""
    global _finalizer
    if _finalizer is None:
        # A multiprocessing finalizer, not atexit: it runs at a normal exit too
        # (multiprocessing's own atexit hook runs it), and also in a multiprocessing child
        # (granian's workers), which leaves through os._exit and never runs atexit.
        # Registered with the first connection, so a process that never serves a WebSocket
        # has nothing to run.
        _finalizer = multiprocessing.util.Finalize(None, _write_all, exitpriority=0)
    _unwritten[conn] = write_at_exit


def forget(conn: Connection) -> bool:
    """Take ``conn`` off the list; False when it was not there (the exit wrote it already)."""
    return _unwritten.pop(conn, None) is not None


def _write_all() -> None:
    for conn, write_at_exit in list(_unwritten.items()):
        conn.process_exits()
        write_at_exit(conn)
