"""The ``on_close`` hooks in process: run together, each told of its own failure, bounded in all
whatever a hook does, waited for by the lifespan shutdown, and run once more at a process's
exit for the records a server never ended (``closeguard.unwritten``).

The bounds are patched small here; what the default bound does under real servers is in
tests/test_hooks_wire.py.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import pickle
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from closeguard import (
    LOGGER_NAME,
    CloseRecord,
    InvalidCloseCode,
    InvalidCloseReason,
    WebSocketCloseMiddleware,
    connection_id,
    unwritten,
)
from closeguard import hooks as hooks_module
from tests.fake_server import FakeServer, websocket_scope

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:
    from exceptiongroup import BaseExceptionGroup

#: The patched bound: long enough for the hooks that do end, short enough for a fast test.
BOUND = 0.2


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(hooks_module, "ASYNC_HOOK_WAIT", BOUND)
    monkeypatch.setattr(unwritten, "EXIT_HOOK_WAIT", BOUND)
    return BOUND


async def accept_and_return(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})


async def accept_and_wait(scope: Scope, receive: Receive, send: Send) -> None:
    await accept_and_return(scope, receive, send)
    await receive()


async def serve_once(guarded: WebSocketCloseMiddleware) -> None:
    server = FakeServer()
    await asyncio.wait_for(guarded(websocket_scope(), server.receive, server.send), timeout=5)


def hook_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "on_close hook" in r.getMessage()]


# Together, each on its own ------------------------------------------------------------------


async def test_async_hooks_run_together() -> None:
    """Each hook waits for the other: only hooks that run at the same time both finish."""
    first_ran, second_ran = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def first(record: CloseRecord) -> None:
        first_ran.set()
        await second_ran.wait()
        done.append("first")

    async def second(record: CloseRecord) -> None:
        second_ran.set()
        await first_ran.wait()
        done.append("second")

    await serve_once(WebSocketCloseMiddleware(accept_and_return, on_close=[first, second]))
    assert sorted(done) == ["first", "second"]


async def test_a_hanging_hook_is_cut_off_by_name_and_the_others_finish(
    bound: float, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[CloseRecord] = []

    async def hangs(record: CloseRecord) -> None:
        await asyncio.Event().wait()

    async def stores(record: CloseRecord) -> None:
        await asyncio.sleep(bound / 4)
        records.append(record)

    with (
        caplog.at_level(logging.INFO, logger=LOGGER_NAME),
        warnings.catch_warnings(record=True) as seen,
    ):
        warnings.simplefilter("always")
        await serve_once(WebSocketCloseMiddleware(accept_and_return, on_close=[hangs, stores]))
        gc.collect()
    [record] = records
    assert hook_failures(caplog) == [
        f"closeguard on_close hook {hangs.__qualname__} was cut off after {bound:g} s "
        f"for {record.connection_id}"
    ]
    # The hook cut off is cancelled, not left to warn that it was never awaited.
    assert not [w for w in seen if "never awaited" in str(w.message)]


async def swallows_cancellation(record: CloseRecord) -> None:
    """A hook that will not be cancelled: it waits on, a long time."""
    for _ in range(50):
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            continue


async def blocks_a_thread(record: CloseRecord) -> None:
    """A blocking driver run in a thread: cancelling the await does not stop the thread."""
    await run_in_threadpool(time.sleep, 2)


@pytest.mark.parametrize("hook", [swallows_cancellation, blocks_a_thread])
async def test_a_hook_that_cannot_be_cancelled_holds_the_connection_only_for_the_bound(
    hook: Any, bound: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection's task ends within the bound (and well before the hook's 2 s or 5 s)."""
    guarded = WebSocketCloseMiddleware(accept_and_return, on_close=hook)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        await serve_once(guarded)
    assert time.monotonic() - started < bound + 1.0
    [failure] = hook_failures(caplog)
    assert f"{hook.__qualname__} was cut off after {bound:g} s" in failure
    await asyncio.sleep(0)  # the cut-off hook goes on by itself, no longer waited for


class HookError(Exception):
    pass


def raises_cancelled(record: CloseRecord) -> None:
    raise asyncio.CancelledError


async def raises_cancelled_later(record: CloseRecord) -> None:
    await asyncio.sleep(0)
    raise asyncio.CancelledError


async def raises_a_group(record: CloseRecord) -> None:
    await asyncio.sleep(0)
    raise BaseExceptionGroup("two failures", [HookError("one"), asyncio.CancelledError()])


def raises_plainly(record: CloseRecord) -> None:
    raise HookError("the record store is down")


#: What each hook below raises, as the traceback logged with its failure shows it (None: quiet).
RAISED: dict[Any, type[BaseException] | None] = {
    raises_cancelled: asyncio.CancelledError,
    raises_cancelled_later: None,
    raises_a_group: BaseExceptionGroup,
    raises_plainly: HookError,
}


@pytest.mark.parametrize("hook", list(RAISED))
async def test_no_exception_from_a_hook_reaches_the_server_or_stops_another(
    hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failure is logged at ERROR after the record's own line, naming the hook and the
    connection, with the hook's own traceback."""
    after: list[CloseRecord] = []

    async def later(record: CloseRecord) -> None:
        await asyncio.sleep(0.01)
        after.append(record)

    guarded = WebSocketCloseMiddleware(accept_and_return, on_close=[hook, later, after.append])
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        await serve_once(guarded)  # nothing is raised
    assert len(after) == 2
    failures = hook_failures(caplog)
    logs = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert getattr(logs[0], "connection_id", None) == after[0].connection_id  # the record
    raised = RAISED[hook]
    if raised is None:
        # An async hook's own CancelledError cannot be told from its being cancelled: quiet.
        assert failures == []
        assert len(logs) == 1
    else:
        assert failures == [
            f"closeguard on_close hook {hook.__qualname__} failed for {after[0].connection_id}"
        ]
        [failure] = logs[1:]
        assert failure.levelno == logging.ERROR
        assert failure.exc_info is not None
        assert isinstance(failure.exc_info[1], raised)


def as_generator(record: CloseRecord) -> Iterator[None]:
    yield


async def as_async_generator(record: CloseRecord) -> AsyncIterator[None]:
    yield


class GeneratorCall:
    def __call__(self, record: CloseRecord) -> Iterator[None]:
        yield


@pytest.mark.parametrize(
    ("hook", "kind"),
    [
        (as_generator, "a generator"),
        (as_async_generator, "an async generator"),
        (GeneratorCall(), "a generator"),
    ],
)
def test_a_generator_function_is_refused_as_a_hook(hook: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=f"is {kind} function: calling it only makes"):
        WebSocketCloseMiddleware(accept_and_return, on_close=[print, hook])


# When the server cancels, and shuts down ------------------------------------------------------


async def lifespan_shutdown(guarded: WebSocketCloseMiddleware) -> list[tuple[float, str]]:
    """Run the lifespan scope through ``guarded`` to the end; when each message was sent."""
    sent: list[tuple[float, str]] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append((time.monotonic(), message["type"]))

    await guarded({"type": "lifespan"}, receive, send)
    return sent


async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
    else:
        await accept_and_wait(scope, receive, send)


async def test_hooks_cut_from_a_cancelled_task_finish_before_the_shutdown_completes() -> None:
    """uvicorn cancels the connections' tasks at its graceful timeout, then runs the lifespan
    shutdown, then exits: the hooks go on after the cancel and the shutdown waits for them."""
    stored: list[float] = []

    async def store(record: CloseRecord) -> None:
        await asyncio.sleep(0.3)
        stored.append(time.monotonic())

    guarded = WebSocketCloseMiddleware(lifespan_app, on_close=store)
    server = FakeServer(idle="wait")
    task = asyncio.ensure_future(guarded(websocket_scope(), server.receive, server.send))
    for _ in range(100):
        if server.calls >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()  # and, as uvicorn does, on to the lifespan shutdown without awaiting it
    await asyncio.sleep(0.05)
    # Pending: the connection's ending (its 1012, sent during the teardown) and its hooks.
    assert (hooks_module.pending(), stored) == (2, [])
    sent = await lifespan_shutdown(guarded)
    assert [kind for _, kind in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    [stored_at] = stored
    assert stored_at <= sent[1][0]
    assert hooks_module.pending() == 0
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_shutdown_waits_no_longer_than_the_bound(bound: float) -> None:
    async def hangs(record: CloseRecord) -> None:
        await asyncio.Event().wait()

    guarded = WebSocketCloseMiddleware(lifespan_app, on_close=hangs)
    connection = asyncio.ensure_future(serve_once(guarded))
    await asyncio.sleep(0.05)  # the hook runs; the connection waits for it
    started = time.monotonic()
    sent = await lifespan_shutdown(guarded)
    assert sent[-1][0] - started < bound + 1.0
    await connection
    assert hooks_module.pending() == 0


async def test_the_shutdown_passes_at_once_with_no_hooks_running() -> None:
    sent = await lifespan_shutdown(WebSocketCloseMiddleware(lifespan_app))
    assert [kind for _, kind in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# closeguard twice ------------------------------------------------------------------------------


async def test_a_second_closeguard_on_the_connection_passes_it_through() -> None:
    outer: list[CloseRecord] = []
    inner: list[CloseRecord] = []
    ids: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ids.append(connection_id(scope))
        await accept_and_return(scope, receive, send)

    twice = WebSocketCloseMiddleware(
        WebSocketCloseMiddleware(app, on_close=inner.append), on_close=outer.append
    )
    await serve_once(twice)
    assert (len(outer), inner) == (1, [])
    assert ids == [outer[0].connection_id]


async def test_closeguard_wrapped_and_in_starlettes_list_writes_one_record() -> None:
    outer: list[CloseRecord] = []
    inner: list[CloseRecord] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "bye")

    app = Starlette(
        routes=[WebSocketRoute("/ws", endpoint)],
        middleware=[Middleware(WebSocketCloseMiddleware, on_close=inner.append)],
    )
    await serve_once(WebSocketCloseMiddleware(app, on_close=outer.append))
    assert ([(r.code, r.reason) for r in outer], inner) == ([(4000, "bye")], [])


# The exceptions, across processes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        InvalidCloseCode("close code 1005 is reserved for local use", 1005),
        InvalidCloseReason("the reason is 124 bytes in UTF-8; at most 123 may be sent", "é" * 62),
    ],
)
def test_the_close_errors_survive_pickling_and_copying(error: Exception) -> None:
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert vars(clone) == vars(error)


# At the process's exit ------------------------------------------------------------------------


def open_connections(guarded: WebSocketCloseMiddleware, count: int) -> list[asyncio.Task[None]]:
    return [
        asyncio.ensure_future(
            guarded(websocket_scope(f"/ws/{i}"), FakeServer(idle="wait").receive, _discard)
        )
        for i in range(count)
    ]


async def _discard(message: Message) -> None:
    pass


async def exit_process() -> float:
    """The exit-time writer, as a server that never ended its tasks runs it: in a thread with
    no event loop (the loop above waits meanwhile). How long it took."""
    started = time.monotonic()
    await asyncio.to_thread(unwritten._write_all)
    return time.monotonic() - started


async def end(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_at_exit_every_record_is_logged_before_any_hook_and_a_hang_holds_only_the_bound(
    bound: float, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    class InOrder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            order.append("log" if hasattr(record, "connection_id") else "failure")

    async def hangs_unless_first(record: CloseRecord) -> None:
        order.append("hook")
        if record.path != "/ws/0":
            await swallows_cancellation(record)

    guarded = WebSocketCloseMiddleware(accept_and_wait, on_close=hangs_unless_first)
    tasks = open_connections(guarded, 3)
    await asyncio.sleep(0.05)
    handler = InOrder()
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            took = await exit_process()
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        await end(tasks)
    assert took < bound + 1.0
    assert order == ["log"] * 3 + ["hook"] * 3 + ["failure"] * 2
    assert all("was cut off after" in failure for failure in hook_failures(caplog))


async def test_at_exit_a_thousand_records_run_their_hooks_in_one_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the default bound: a 0.1 s hook each, together, not one after another (100 s)."""
    stored: list[str] = []
    loops: set[int] = set()

    async def store(record: CloseRecord) -> None:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0.1)
        stored.append(record.path)

    guarded = WebSocketCloseMiddleware(accept_and_wait, on_close=store)
    tasks = open_connections(guarded, 1000)
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        took = await exit_process()
    await end(tasks)
    assert took < unwritten.EXIT_HOOK_WAIT
    assert sorted(stored) == sorted(f"/ws/{i}" for i in range(1000))
    assert len(loops) == 1
    logged = [r for r in caplog.records if getattr(r, "path", "").startswith("/ws/")]
    assert len(logged) == 1000
    assert hook_failures(caplog) == []


# Under trio ------------------------------------------------------------------------------------


async def test_outside_asyncio_the_hooks_run_together_in_a_task_group(
    monkeypatch: pytest.MonkeyPatch, bound: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no asyncio loop runs (trio), the hooks run in an anyio task group, bounded alike;
    anyio's task group is the same under asyncio, where this test runs it."""
    monkeypatch.setattr(hooks_module, "under_asyncio", lambda: False)
    first_ran, second_ran = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def first(record: CloseRecord) -> None:
        first_ran.set()
        await second_ran.wait()
        done.append("first")

    async def second(record: CloseRecord) -> None:
        second_ran.set()
        await first_ran.wait()
        raise HookError("the record store is down")

    async def hangs(record: CloseRecord) -> None:
        await asyncio.Event().wait()

    guarded = WebSocketCloseMiddleware(accept_and_return, on_close=[first, second, hangs])
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        await serve_once(guarded)
    assert done == ["first"]
    assert [failure.split(" for ")[0] for failure in hook_failures(caplog)] == [
        f"closeguard on_close hook {second.__qualname__} failed",
        f"closeguard on_close hook {hangs.__qualname__} was cut off after {bound:g} s",
    ]


async def test_the_shutdown_waits_only_for_its_own_loops_hooks() -> None:
    """Hooks running in another thread's event loop (a second server in the same process) are
    that loop's shutdown's to wait for, not this one's."""
    started, release = threading.Event(), threading.Event()

    async def waits(record: CloseRecord) -> None:
        started.set()
        await asyncio.to_thread(release.wait, 5)

    def other_server() -> None:
        asyncio.run(serve_once(WebSocketCloseMiddleware(accept_and_return, on_close=waits)))

    thread = threading.Thread(target=other_server)
    thread.start()
    try:
        assert started.wait(5)
        assert hooks_module.pending() == 1
        began = time.monotonic()
        sent = await lifespan_shutdown(WebSocketCloseMiddleware(lifespan_app))
        assert [kind for _, kind in sent][-1] == "lifespan.shutdown.complete"
        assert sent[-1][0] - began < hooks_module.ASYNC_HOOK_WAIT / 2  # it did not wait on it
        assert hooks_module.pending() == 1  # the other loop's hook still runs
    finally:
        release.set()
        thread.join(5)
