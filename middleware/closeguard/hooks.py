"""The ``on_close`` hooks: each is given every record, and none may cost the others theirs.

A hook is where users store records (a database insert, an audit queue), so it runs even while
a shutdown cancels the connection's task; and since it runs inside the connection's task, one
that hangs must not hold it forever.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import anyio

from .closelog import report_failure
from .record import CloseRecord

__all__ = ["ASYNC_HOOK_WAIT", "Hooks", "OnClose"]

#: A hook given every record: a function, or an ``async def`` one, which closeguard awaits.
OnClose: TypeAlias = Callable[[CloseRecord], "Awaitable[None] | None"]

#: How long the connection's task waits for the ``async`` hooks of its record.
ASYNC_HOOK_WAIT = 5.0

#: An ``async`` hook, and what it returned: still to be awaited.
Started: TypeAlias = "tuple[OnClose, Awaitable[None]]"


class Hooks:
    """The hooks of one middleware, and the logger their failures go to."""

    def __init__(self, on_close: OnClose | Sequence[OnClose] | None, logger: logging.Logger):
        self.hooks = checked_hooks(on_close)
        self.logger = logger

    def start(self, record: CloseRecord) -> list[Started]:
        """Call each hook with the record; return the ``async`` ones' awaitables, to finish.
        A hook that raises is logged and the next one still runs."""
        started: list[Started] = []
        for hook in self.hooks:
            try:
                result = hook(record)
            except Exception:
                self.failed(hook, record)
                continue
            if inspect.isawaitable(result):
                started.append((hook, result))
        return started

    async def finish(self, record: CloseRecord, started: list[Started]) -> None:
        """Await what the ``async`` hooks gave back, shielded: a shutdown cancelling the task
        must not cut them off, nor may a hook that hangs hold it forever."""
        awaited = 0  # when the wait runs out, the hook it was on is started[awaited]
        with anyio.move_on_after(ASYNC_HOOK_WAIT, shield=True) as waited:
            for hook, result in started:
                try:
                    await result
                except Exception:
                    self.failed(hook, record)
                awaited += 1
        if waited.cancelled_caught:
            hook, _ = started[awaited]
            self.failed(hook, record, f"took over {ASYNC_HOOK_WAIT:g} s")
            for _, result in started[awaited + 1 :]:  # never started: closed, they do not warn
                if inspect.iscoroutine(result):
                    result.close()

    def finish_without_a_loop(self, record: CloseRecord, started: list[Started]) -> None:
        """Run the ``async`` hooks' awaitables in an event loop of their own: at the process's
        exit, where no loop runs any more."""
        for hook, result in started:
            coroutine = _awaited(result)
            try:
                asyncio.run(coroutine)
            except Exception:
                # Never started when a loop still runs in this thread: closed, they do not
                # warn that they were never awaited.
                coroutine.close()
                if inspect.iscoroutine(result):
                    result.close()
                self.failed(hook, record)

    def failed(self, hook: OnClose, record: CloseRecord, how: str = "failed") -> None:
        """Log a hook's failure with its traceback (the current exception, if any)."""
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            self.logger.error(
                "closeguard on_close hook %s %s for %s",
                name,
                how,
                record.connection_id,
                exc_info=sys.exc_info()[0] is not None,
            )
        except Exception:
            report_failure(f"closeguard: the on_close hook for {record.connection_id}")


def checked_hooks(on_close: OnClose | Sequence[OnClose] | None) -> tuple[OnClose, ...]:
    """``on_close`` as a tuple of hooks, each checked to be callable."""
    if on_close is None:
        return ()
    hooks = (on_close,) if callable(on_close) else on_close
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Sequence):
        raise TypeError(
            "on_close must be a function taking a CloseRecord (plain or async def), "
            f"a list of them, or None; got {on_close!r}"
        )
    for hook in hooks:
        if not callable(hook):
            raise TypeError(
                "every on_close hook must be a function taking a CloseRecord "
                f"(plain or async def); got {hook!r} in {on_close!r}"
            )
    return tuple(hooks)


async def _awaited(result: Awaitable[Any]) -> None:
    await result
