"""The one timer of an open connection under a close policy: set for its next deadline, it
looks when that comes, and either closes (the policy's code and name) or sets itself for the
next. An idle connection costs no wake-up before its deadline; a busy one only moves the time
its timer will find, with a write."""

from __future__ import annotations

import asyncio

from .policies import Limits, Watch
from .server import Server

__all__ = ["stop", "watch"]


def watch(server: Server, limits: Limits) -> None:
    """Start the policies' clock of a connection just accepted."""
    server.conn.watch = Watch(limits)
    _arm(server)


def stop(server: Server) -> None:
    """The connection is over: its timer goes."""
    watch = server.conn.watch
    if watch is not None and watch.timer is not None:
        watch.timer.cancel()
        watch.timer = None


def _arm(server: Server) -> None:
    watch = server.conn.watch
    assert watch is not None
    deadline = watch.next_deadline()
    if deadline is not None:
        watch.timer = asyncio.get_running_loop().call_at(deadline, _look, server)


def _look(server: Server) -> None:
    watch = server.conn.watch
    assert watch is not None
    watch.timer = None
    policy = watch.due()
    if policy is None:
        _arm(server)  # data came meanwhile: the idle deadline moved on
        return
    answer = server.conn.policy_closes(policy)
    if answer is not None:  # else it ended meanwhile
        server.close_soon(answer)
