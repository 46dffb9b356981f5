"""The ``on_close`` hooks: each is given every record, and none may cost the others theirs.

A hook is where users store records (a database insert, an audit queue). Plain hooks are
called in turn; ``async`` hooks each run as a task of their own, all at once, so that one that
hangs neither delays nor cuts off the others, and a server cancelling the connection's task
does not cancel them. The connection waits for them at most :data:`ASYNC_HOOK_WAIT` in all:
a hook still running then is cancelled, logged by name, and left behind, since one that
swallows the cancellation, or waits on a thread, would otherwise hold the connection as long
as it likes. Until then, the hooks still running are :func:`pending`, so that a server's
shutdown can wait for them (see :func:`wait_for_pending`).
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

__all__ = [
    "ASYNC_HOOK_WAIT",
    "Hooks",
    "OnClose",
    "holding_shutdown",
    "pending",
    "wait_for_pending",
]

#: A hook given every record: a function, or an ``async def`` one, which closeguard awaits.
OnClose: TypeAlias = Callable[[CloseRecord], "Awaitable[None] | None"]

#: How long, in all, the ``async`` hooks of one record may run before they are cut off.
ASYNC_HOOK_WAIT = 5.0

#: An ``async`` hook, and what it returned: still to be awaited.
Started: TypeAlias = "tuple[OnClose, Awaitable[None]]"

#: The runs of ``async`` hooks not yet over, each bounded by :data:`ASYNC_HOOK_WAIT`. Kept
#: here, not only by the connection's task: a server may cancel that task and move on to its
#: shutdown while they still run. Filled by the first record that has ``async`` hooks.
_running: set[asyncio.Task[None]] = set()


class Hooks:
    """The hooks of one middleware, and its logger: the one its records and the hooks'
    failures go to."""

    def __init__(self, on_close: OnClose | Sequence[OnClose] | None, logger: logging.Logger):
        self.hooks = checked_hooks(on_close)
        self.logger = logger

    def start(self, record: CloseRecord) -> list[Started]:
        """Call each hook with the record; return the ``async`` ones' awaitables, to finish.
        A hook that raises, whatever it raises, is logged and the next one still runs."""
        started: list[Started] = []
        for hook in self.hooks:
            try:
                result = hook(record)
            except (KeyboardInterrupt, SystemExit):
                raise  # the process's, not the hook's: it is being stopped
            except BaseException:
                self.failed(hook, record)
                continue
            if inspect.isawaitable(result):
                started.append((hook, result))
        return started

    async def finish(self, record: CloseRecord, started: list[Started]) -> None:
        """Run the ``async`` hooks together and wait for them, at most
        :data:`ASYNC_HOOK_WAIT`. If the connection's task is cancelled meanwhile, the hooks
        run on (their own bound still holds) and the cancellation goes on."""
        if not under_asyncio():  # trio: its cancellation reaches a hook, which cannot hold
            await self._finish_in_a_task_group(record, started)
            return
        run = asyncio.ensure_future(self.run(record, started, ASYNC_HOOK_WAIT))
        keep_until_over(run)
        await asyncio.shield(run)

    async def run(
        self,
        record: CloseRecord,
        started: list[Started],
        bound: float,
        deadline: float | None = None,
    ) -> None:
        """Each awaitable in a task of its own; after ``bound`` seconds (or at ``deadline``, on
        the loop's clock, when the bound is shared), those still running are cancelled, logged
        as cut off, and not waited for."""
        tasks = {asyncio.ensure_future(self._guarded(hook, record, r)): hook for hook, r in started}
        if not tasks:
            return
        if deadline is not None:
            wait = max(0.0, deadline - asyncio.get_running_loop().time())
        else:
            wait = bound
        _, late = await asyncio.wait(tasks, timeout=wait)
        for task in late:
            task.cancel()
            self.cut_off(tasks[task], record, bound)

    async def _guarded(self, hook: OnClose, record: CloseRecord, result: Awaitable[None]) -> None:
        try:
            await result
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise  # the process is stopping, or the loop closed and this coroutine goes with it
        except asyncio.CancelledError:
            # Cancelled when cut off (already logged), when the loop is torn down, or a
            # CancelledError of the hook's own: none of them may reach anyone else.
            pass
        except BaseException:
            self.failed(hook, record)

    async def _finish_in_a_task_group(self, record: CloseRecord, started: list[Started]) -> None:
        """The same, bounded alike, without asyncio's tasks: an anyio task group (trio's
        cancellation reaches a hook that awaits, and anyio's shield keeps a server's away)."""
        over = [False] * len(started)

        async def one(index: int, hook: OnClose, result: Awaitable[None]) -> None:
            try:
                await result
            except Exception:
                self.failed(hook, record)
            over[index] = True

        with anyio.move_on_after(ASYNC_HOOK_WAIT, shield=True):
            async with anyio.create_task_group() as group:
                for index, (hook, result) in enumerate(started):
                    group.start_soon(one, index, hook, result)
        for (hook, _), done in zip(started, over, strict=True):
            if not done:
                self.cut_off(hook, record, ASYNC_HOOK_WAIT)

    def failed(self, hook: OnClose, record: CloseRecord) -> None:
        """Log a hook's failure with its traceback: called while handling its exception."""
        self._log(hook, record, "failed", traceback=True)

    def cut_off(self, hook: OnClose, record: CloseRecord, bound: float) -> None:
        """Log a hook still running at its bound: no traceback, whatever is being handled."""
        self._log(hook, record, f"was cut off after {bound:g} s", traceback=False)

    def _log(self, hook: OnClose, record: CloseRecord, how: str, *, traceback: bool) -> None:
        try:
            self.logger.error(
                "closeguard on_close hook %s %s for %s",
                hook_name(hook),
                how,
                record.connection_id,
                exc_info=traceback and sys.exc_info()[0] is not None,
            )
        except Exception:
            report_failure(f"closeguard: the on_close hook for {record.connection_id}")


def under_asyncio() -> bool:
    """Whether an asyncio event loop runs this code (under trio, none does)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def keep_until_over(task: asyncio.Task[None]) -> None:
    """Count ``task``, a connection's ending still under way (its close during a server's
    teardown), among what a server's shutdown waits for, as a run of hooks is."""
    _running.add(task)
    task.add_done_callback(_running.discard)


def pending() -> int:
    """How many records' ``async`` hooks are still running in this process."""
    return len(_running)


async def wait_for_pending() -> None:
    """Wait until every record's ``async`` hooks are over: done, or cut off at their bound.

    A server's shutdown awaits this before it lets its process exit (uvicorn kills itself with
    SIGTERM's default action right after the app's lifespan shutdown). Each run ends by
    itself within :data:`ASYNC_HOOK_WAIT` of its start, so one such wait is the bound; runs
    that start meanwhile (a connection ending late) are waited for within the same bound.
    """
    if not under_asyncio():  # trio: no hook outlives its connection's task there
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ASYNC_HOOK_WAIT
    for _ in range(1000):  # again for runs that started meanwhile, within the same deadline
        ours = {task for task in _running if task.get_loop() is loop}  # not another thread's
        if not ours or loop.time() >= deadline:
            return
        await asyncio.wait(ours, timeout=deadline - loop.time())


def hook_name(hook: object) -> str:
    """The name a log line gives a hook: its qualified name, as ``def`` wrote it."""
    return str(getattr(hook, "__qualname__", None) or repr(hook))


def checked_hooks(on_close: OnClose | Sequence[OnClose] | None) -> tuple[OnClose, ...]:
    """``on_close`` as a tuple of hooks, each checked to be callable and to be no generator
    function: calling one only makes a generator, so its body would never run."""
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
        kind = _generator_kind(hook)
        if kind is not None:
            raise TypeError(
                f"on_close hook {hook_name(hook)} is {kind} function: calling it only makes "
                "a generator and its body never runs; use a plain or async def function "
                "(return instead of yield)"
            )
    return tuple(hooks)


def _generator_kind(hook: object) -> str | None:
    """Whether ``hook`` (or, for an object, its ``__call__``) is a generator function."""
    for function in (hook, type(hook).__call__):
        if inspect.isasyncgenfunction(function):
            return "an async generator"
        if inspect.isgeneratorfunction(function):
            return "a generator"
    return None


def holding_shutdown(send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A lifespan ``send`` that holds the app's word that its shutdown is over until the
    hooks still running are over too (:func:`wait_for_pending`): a server exits right after
    it (uvicorn re-raises SIGTERM), and would cut them off."""

    async def send_when_hooks_are_over(message: Any) -> None:
        if str(message.get("type", "")).startswith("lifespan.shutdown."):
            await wait_for_pending()
        await send(message)

    return send_when_hooks_are_over
