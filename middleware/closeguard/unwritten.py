"""Connections whose record is not yet written, so that a process's exit writes them.

A server that exits without ending its app tasks (daphne at SIGTERM, granian's workers at
times) would otherwise leave those connections unrecorded. At the exit every such record is
logged first, all of them, since a log line costs nothing and a hook may cost anything; then
their hooks run: the plain ones in turn, the ``async`` ones all together in one event loop,
with one bound for all of them, :data:`EXIT_HOOK_WAIT`. A hook still running then is
cancelled, logged by name, and left behind, so the process exits within that bound whatever
the hooks do (hang, swallow the cancellation, wait on a thread).
"""

from __future__ import annotations

import asyncio
import multiprocessing.util
import threading
import time

from .closelog import log_record
from .connection import Connection
from .hooks import Hooks, under_asyncio
from .record import CloseRecord

__all__ = ["EXIT_HOOK_WAIT", "remember", "take"]

#: How long the ``async`` hooks of every record written at a process's exit may run, in all.
#: Within a container's usual 10 s between SIGTERM and SIGKILL, with room for the server's own.
EXIT_HOOK_WAIT = 5.0

#: After the bound, how long the hooks cut off are given to take their cancellation: those
#: that do end cleanly, and only the ones that will not are left pending.
CANCEL_SETTLE = 0.1

#: Each unwritten connection, with the hooks its record goes to (and their logger, which is
#: the middleware's: the record's too).
_unwritten: dict[Connection, Hooks] = {}
#: The hooks the exit cut off and could not end: kept, so that the loop they are left in does
#: not report each as "destroyed but pending" in the log, after it was logged as cut off.
_abandoned: list[asyncio.Task[object]] = []
_finalizer: multiprocessing.util.Finalize | None = None


def remember(conn: Connection, hooks: Hooks) -> None:
    """Keep ``conn`` until :func:`take`; at the process's exit, its record goes to the
    middleware's logger, then to its ``hooks``."""
    global _finalizer
    if _finalizer is None:
        # A multiprocessing finalizer, not atexit: it runs at a normal exit too
        # (multiprocessing's own atexit hook runs it), and also in a multiprocessing child
        # (granian's workers), which leaves through os._exit and never runs atexit.
        # Registered with the first connection, so a process that never serves a WebSocket
        # has nothing to run.
        _finalizer = multiprocessing.util.Finalize(None, _write_all, exitpriority=0)
    _unwritten[conn] = hooks


def take(conn: Connection) -> CloseRecord | None:
    """The record of ``conn``, taken off the list: once, by the connection's end or by the
    process's exit, whichever comes first (None for the other)."""
    if _unwritten.pop(conn, None) is None:
        return None
    return conn.record(time.perf_counter() - conn.started)


def _write_all() -> None:
    """Log every unwritten record, then run their hooks within :data:`EXIT_HOOK_WAIT`."""
    written: list[tuple[Hooks, CloseRecord]] = []
    for conn, hooks in list(_unwritten.items()):
        conn.process_exits()
        record = take(conn)
        if record is not None:
            log_record(hooks.logger, record)
            if hooks.hooks:
                written.append((hooks, record))
    if not written:
        return
    if not under_asyncio():  # as at a process's exit: no loop runs in this thread
        run_hooks(written, EXIT_HOOK_WAIT)
        return
    # A loop still runs in this thread (a finalizer called from inside it): the hooks get a
    # thread of their own, and this one waits for it within the same bound.
    thread = threading.Thread(target=run_hooks, args=(written, EXIT_HOOK_WAIT), daemon=True)
    thread.start()
    thread.join(EXIT_HOOK_WAIT + 2 * CANCEL_SETTLE)


def run_hooks(written: list[tuple[Hooks, CloseRecord]], bound: float) -> None:
    """The hooks of every record in ``written``, in one new event loop, for at most ``bound``
    seconds in all (and :data:`CANCEL_SETTLE` for the cancellations to land)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_run_all(written, bound))
        leftover = asyncio.all_tasks(loop)
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover, timeout=CANCEL_SETTLE))
            _abandoned.extend(task for task in leftover if not task.done())
    finally:
        # Tasks that would not end stay pending: closing the loop does not wait for them.
        loop.close()


async def _run_all(written: list[tuple[Hooks, CloseRecord]], bound: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    runs = []
    for hooks, record in written:
        started = hooks.start(record)  # the plain hooks run here, in turn
        if started:
            runs.append(hooks.run(record, started, bound, deadline))
    await asyncio.gather(*runs)
