"""A drain: the process stops taking WebSockets and closes the open ones, spread over a window.

A server's own shutdown closes every socket at once (uvicorn's 1012), so every client comes back
at the same instant, onto the pods still running. A drain closes them over ``drain_window``
seconds instead, each with 1012 (Service Restart, which code-aware clients retry), and turns new
handshakes away (HTTP 503 with ``Retry-After``, or 1013 where the server cannot answer a
handshake with HTTP), so clients go elsewhere. ASGI gives an app no signal before the server's
shutdown (uvicorn runs the lifespan shutdown after every socket got its 1012), so a drain is
started before it: by :func:`start_drain`, or by a file that a preStop hook touches
(``drain_file``), which every worker of every server then notices within a second.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time

from .server import Server

__all__ = ["draining", "start_drain"]

#: How often, at most, a drain file is looked for: at a new connection, and by a timer that runs
#: while WebSockets are open. One ``stat`` a second is nothing to a worker.
FILE_CHECK_INTERVAL = 1.0

_draining = False
#: The open connections, by the event loop that serves them, each with its middleware's window.
_open: dict[asyncio.AbstractEventLoop, dict[Server, float]] = {}
#: The drain files the middlewares of this process watch, and when they were last looked for.
_files: set[str] = set()
_files_checked = -math.inf
#: Each loop's pending file check (a timer), so that there is one per loop at most.
_file_timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}
#: The tasks a drain started (its drainer, and each close), kept from the garbage collector.
_tasks: set[asyncio.Task[None]] = set()


def start_drain() -> None:
    """Start draining every :class:`~closeguard.WebSocketCloseMiddleware` in this process.

    New WebSocket handshakes are refused from now on, and the open connections are closed over
    each middleware's ``drain_window``. Calling it again changes nothing. It may be called from
    any thread (a signal handler's, say) as well as from the event loop.
    """
    global _draining
    if _draining:
        return
    _draining = True
    for loop in list(_open):
        loop.call_soon_threadsafe(_start_drainer, loop)


def draining() -> bool:
    """Whether this process is draining: a readiness check should fail while it is."""
    return _draining


def watch_file(path: str) -> None:
    """Start draining as soon as ``path`` exists: looked for now (at most once a second) and,
    while connections are open, by a timer once a second."""
    _files.add(path)
    _check_files()


def opened(server: Server, window: float) -> None:
    """A connection of the running loop is open to be drained; ``closed`` takes it back."""
    loop = asyncio.get_running_loop()
    _open.setdefault(loop, {})[server] = window
    if _files and loop not in _file_timers:
        _file_timers[loop] = loop.call_later(FILE_CHECK_INTERVAL, _file_timer, loop)


def closed(server: Server) -> None:
    for connections in _open.values():
        connections.pop(server, None)


def _start_drainer(loop: asyncio.AbstractEventLoop) -> None:
    _keep(loop.create_task(_drain(dict(_open.get(loop, {})))))


async def _drain(connections: dict[Server, float]) -> None:
    """Close each connection at its own moment: with N open under one window, the k-th (in a
    random order) at ``window * (k + u) / N`` for a fresh random u in [0, 1), so that every slice
    of the window closes its share of them, give or take one, and never a burst."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    schedule: list[tuple[float, Server]] = []
    for window in set(connections.values()):
        group = [server for server, each in connections.items() if each == window]
        random.shuffle(group)
        schedule += [
            (start + window * (k + random.random()) / len(group), server)
            for k, server in enumerate(group)
        ]
    schedule.sort(key=lambda item: item[0])
    for at, server in schedule:
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        answer = server.conn.process_drains()
        if answer is not None:  # else it ended on its own meanwhile
            server.close_soon(answer)


def _keep(task: asyncio.Task[None]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _check_files() -> None:
    global _files_checked
    now = time.monotonic()
    if _draining or now - _files_checked < FILE_CHECK_INTERVAL:
        return
    _files_checked = now
    if any(os.path.exists(path) for path in _files):
        start_drain()


def _file_timer(loop: asyncio.AbstractEventLoop) -> None:
    del _file_timers[loop]
    _check_files()
    if not _draining and _open.get(loop):
        _file_timers[loop] = loop.call_later(FILE_CHECK_INTERVAL, _file_timer, loop)
