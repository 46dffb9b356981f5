"""The ASGI middleware: a thin wrapper that hands :class:`Connection` every message and does
what it answers."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, TypeAlias

import anyio
from starlette.types import Scope

from . import deadlines, drain, unwritten
from .closelog import LOGGER_NAME, log_record
from .connection import DRAINING_REASON, Connection, Ending
from .guarded import Guarded
from .hooks import Hooks, OnClose, holding_shutdown, keep_until_over, under_asyncio
from .options import MaxMessageSize, check_options, limit_for
from .policies import CAPACITY_RETRY_AFTER, OVER_CAPACITY, Count, Policies, Rate, Seconds
from .server import Server

__all__ = ["ASGIApplication", "MaxMessageSize", "WebSocketCloseMiddleware", "connection_id"]

#: Any ASGI 3 application. Frameworks type scope, receive and send each their own way
#: (Starlette as mappings; Litestar, and Quart through hypercorn, as TypedDicts), and a
#: callable's parameters are contravariant: only ``Any`` admits every one of them under
#: ``mypy --strict``, and lets the middleware stand wherever the app stood.
ASGIApplication: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

#: The scope key under which the app finds closeguard's id for its connection.
SCOPE_KEY = "closeguard.connection_id"

#: How long a close may take while the server tears the task down (a cancellation): the
#: client should get a code it retries, but a shutdown must not wait on it.
TEARDOWN_CLOSE_WAIT = 1.0


def connection_id(scope: Scope) -> str | None:
    """The id closeguard gave this connection; it is also the record's ``connection_id``."""
    value = scope.get(SCOPE_KEY)
    return None if value is None else str(value)


class WebSocketCloseMiddleware:
    """Make every WebSocket connection end with one valid Close frame and one record.

    ``http`` and ``lifespan`` scopes go straight to the app. For ``websocket`` scopes the app's
    closes are checked against RFC 6455, an exception after accept becomes 1011, an inbound
    message over ``max_message_size`` becomes 1009, a forgotten close becomes 1000, and each
    connection ends in one :class:`CloseRecord`, logged and passed to ``on_close``.
    """

    def __init__(
        self,
        app: ASGIApplication,
        *,
        max_message_size: MaxMessageSize = 1_048_576,
        on_close: OnClose | Sequence[OnClose] | None = None,
        invalid_close: Literal["raise", "replace"] = "raise",
        reraise: bool = True,
        logger: logging.Logger | None = None,
        drain_window: float = 10.0,
        drain_file: str | os.PathLike[str] | None = None,
        idle_timeout: Seconds = None,
        max_lifetime: Seconds = None,
        first_message_timeout: Seconds = None,
        max_connections: Count = None,
        max_connections_per_client: Count = None,
        client_key: Callable[[Scope], Hashable] | None = None,
        max_messages_per_second: Rate = None,
        max_bytes_per_second: Rate = None,
        rate_burst: float = 1.0,
    ) -> None:
        check_options(
            app,
            max_message_size=max_message_size,
            invalid_close=invalid_close,
            reraise=reraise,
            logger=logger,
            drain_window=drain_window,
            drain_file=drain_file,
        )
        self.app = app
        self.max_message_size = max_message_size
        self.replace_invalid = invalid_close == "replace"
        self.reraise = reraise
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.hooks = Hooks(on_close, self.logger)
        self.policies = Policies(
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            first_message_timeout=first_message_timeout,
            max_connections=max_connections,
            max_connections_per_client=max_connections_per_client,
            client_key=client_key,
            max_messages_per_second=max_messages_per_second,
            max_bytes_per_second=max_bytes_per_second,
            rate_burst=rate_burst,
        )
        self.drain_window = float(drain_window)
        self.drain_file = None if drain_file is None else os.fspath(drain_file)

    @property
    def on_close(self) -> tuple[OnClose, ...]:
        """The hooks given every record, in the order they run."""
        return self.hooks.hooks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Typed as loosely as ASGIApplication, so that an app's own framework takes the
        # middleware in its place; one coroutine, not a second one for WebSockets, since each
        # idle connection keeps its frames (a second one: 232 bytes, measured).
        if scope["type"] != "websocket":
            if scope["type"] == "lifespan":  # the server's shutdown waits for running hooks
                send = holding_shutdown(send)
            await self.app(scope, receive, send)
            return
        if SCOPE_KEY in scope:
            # closeguard mounted twice (wrapped, and again in a framework's list): the outer
            # one has this connection, and one connection is one record and one count.
            await self.app(scope, receive, send)
            return
        try:
            limit = limit_for(self.max_message_size, scope)
            limits = self.policies.limits_for(scope)
            counted = self.policies.admit(scope)
            bad_option = None
        except ValueError as error:  # a callable option's nonsense: the handshake fails
            limit, limits, counted, bad_option = None, None, (), error  # (HTTP 500), recorded
        conn = Connection(
            started=time.perf_counter(),
            connection_id=os.urandom(16).hex(),
            path=scope.get("path", ""),
            client=scope.get("client"),
            max_message_size=limit,
            replace_invalid=self.replace_invalid,
            reraise=self.reraise,
        )
        # The scope is this connection's own dict (ASGI); Starlette adds its keys to it too.
        scope[SCOPE_KEY] = conn.connection_id
        server = Server(conn, receive, send)
        unwritten.remember(conn, self.hooks)
        if self.drain_file is not None:
            drain.watch_file(self.drain_file)
        if drain.draining() or counted is None:
            # Turned away before the app runs, with a refusal clients retry elsewhere or later.
            reason, retry_after = (
                (DRAINING_REASON, self.drain_window)
                if counted is not None
                else (OVER_CAPACITY, CAPACITY_RETRY_AFTER)
            )
            try:
                await server.refuse(scope, reason, retry_after)
            finally:
                self.policies.release(counted or ())
                await self._end(server, conn.app_ends(None), None)
            return

        drain.opened(server, self.drain_window)
        try:
            if bad_option is not None:
                raise bad_option
            guarded = Guarded(server, limits)
            await self.app(scope, guarded.receive, guarded.send)
        except BaseException as exc:
            self._leave(server, counted)
            ending = conn.app_ends(exc)
            await self._end(server, ending, exc)
            if ending.reraise:
                raise
        else:
            self._leave(server, counted)
            await self._end(server, conn.app_ends(None), None)
        if server.error is not None:
            # A close the server would not send (daphne): its own error path closes, with 1011.
            raise server.error from None

    def _leave(self, server: Server, counted: tuple[Hashable, ...]) -> None:
        """The app is done: the connection is no longer drained, timed or counted."""
        drain.closed(server)
        deadlines.stop(server)
        self.policies.release(counted)

    async def _end(self, server: Server, ending: Ending, exc: BaseException | None) -> None:
        """Send closeguard's close if one is due, then write the one record, whatever
        happens meanwhile: a cancellation still leaves its record, then goes on.

        While the server tears the task down, that goes on in a task of its own, bounded by
        :data:`TEARDOWN_CLOSE_WAIT`, which the server's shutdown waits for as it waits for
        hooks (:func:`~closeguard.hooks.holding_shutdown`): uvicorn exits right after it.
        """
        if ending.shielded and under_asyncio():
            teardown = asyncio.ensure_future(self._close_and_record(server, ending, exc))
            keep_until_over(teardown)
            await asyncio.shield(teardown)
            return
        await self._close_and_record(server, ending, exc)

    async def _close_and_record(
        self, server: Server, ending: Ending, exc: BaseException | None
    ) -> None:
        try:
            if ending.shielded:  # a cancel scope costs 7 us: only where a teardown needs one
                with anyio.move_on_after(TEARDOWN_CLOSE_WAIT, shield=True):
                    await server.finish(ending.close)
            else:
                await server.finish(ending.close)
        finally:
            record = unwritten.take(server.conn)  # None: the process's exit wrote it already
            if record is not None:
                log_record(self.logger, record, exc if ending.log_traceback else None)
                started = self.hooks.start(record)
                if started:
                    await self.hooks.finish(record, started)
