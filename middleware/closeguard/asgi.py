"""The ASGI middleware: a thin wrapper that hands :class:`Connection` every message and does
what it answers."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeAlias

from starlette.types import Message, Scope

from . import unwritten
from .closelog import LOGGER_NAME, log_record, report_failure
from .connection import CloseInstead, Connection, Ending
from .hooks import Hooks, OnClose, holding_shutdown
from .record import CloseRecord
from .server import Server

__all__ = ["ASGIApplication", "MaxMessageSize", "WebSocketCloseMiddleware", "connection_id"]

#: Any ASGI 3 application. Frameworks type scope, receive and send each their own way
#: (Starlette as mappings; Litestar, and Quart through hypercorn, as TypedDicts), and a
#: callable's parameters are contravariant: only ``Any`` admits every one of them under
#: ``mypy --strict``, and lets the middleware stand wherever the app stood.
ASGIApplication: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

#: A fixed limit in bytes, a per-connection choice (say, by path), or None for no limit.
MaxMessageSize: TypeAlias = "int | Callable[[Scope], int | None] | None"

#: The scope key under which the app finds closeguard's id for its connection.
SCOPE_KEY = "closeguard.connection_id"

#: The largest limit one may set: any larger is no limit in practice, and the 1009 reason
#: naming it must still fit in 123 bytes.
MAX_LIMIT = 2**62
LIMIT_RULE = f"a whole number of bytes from 1 to {MAX_LIMIT}"


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
    ) -> None:
        # Each option is checked here, where a mistake names itself, rather than at the end
        # of every connection, where it would cost the records.
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
        if invalid_close not in ("raise", "replace"):
            raise ValueError(f"invalid_close must be 'raise' or 'replace', got {invalid_close!r}")
        if not (callable(max_message_size) or _valid_limit(max_message_size)):
            raise ValueError(
                f"max_message_size must be {LIMIT_RULE}, a callable scope -> int | None, "
                f"or None for no limit; got {max_message_size!r}"
            )
        if not isinstance(reraise, bool):
            raise TypeError(f"reraise must be True or False, got {reraise!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(
                f"logger must be a logging.Logger, such as logging.getLogger({LOGGER_NAME!r}), "
                f"or None for that one; got {logger!r}"
            )
        self.app = app
        self.max_message_size = max_message_size
        self.replace_invalid = invalid_close == "replace"
        self.reraise = reraise
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.hooks = Hooks(on_close, self.logger)

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
            limit, bad_limit = self.limit_for(scope), None
        except ValueError as error:  # the handshake fails (HTTP 500), with its record
            limit, bad_limit = None, error
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
        unwritten.remember(conn, self.write_record_at_exit, self.hooks)
        #: Once the core closed instead of delivering, the app hears only this disconnect.
        closed_instead: Message | None = None

        async def guarded_receive() -> Message:
            nonlocal closed_instead
            while closed_instead is None:
                message: Message = await receive()
                answer = conn.server_delivers(message)
                if answer is message:
                    return message
                if isinstance(answer, CloseInstead):
                    await server.send_close(answer.close)
                    closed_instead = answer.disconnect
                # None: data after a close went out; read on, to the server's disconnect.
            return closed_instead

        async def guarded_send(message: Message) -> None:
            if conn.app_sends_data(message):
                try:
                    await send(message)
                except OSError:
                    conn.server_loses_peer(message)
                    raise
                return
            outgoing = conn.app_sends(message)  # accept, close, refusal, or data it refuses
            if outgoing is not None:
                await server.send(outgoing)

        try:
            if bad_limit is not None:
                raise bad_limit
            await self.app(scope, guarded_receive, guarded_send)
        except BaseException as exc:
            ending = conn.app_ends(exc)
            await self._end(server, ending, exc)
            if ending.reraise:
                raise
        else:
            await self._end(server, conn.app_ends(None), None)
        if server.error is not None:
            # A close the server would not send (daphne): its own error path closes, with 1011.
            raise server.error from None

    async def _end(self, server: Server, ending: Ending, exc: BaseException | None) -> None:
        """Send closeguard's close if one is due, then write the one record, whatever
        happens meanwhile: a cancellation still leaves its record, then goes on."""
        try:
            if ending.close is not None:
                await server.send_close(ending.close)
            if server.conn.awaits_report:
                await server.read_report()
        finally:
            # None when the process's exit wrote it already.
            record = self._take_record(server.conn)
            if record is not None:
                self._log(record, exc if ending.log_traceback else None)
                started = self.hooks.start(record)
                if started:
                    await self.hooks.finish(record, started)

    def write_record_at_exit(self, conn: Connection) -> CloseRecord | None:
        """Log the record of a connection the server never ended, as its process exits; the
        record, for the exit to hand to the hooks once every such record is logged."""
        record = self._take_record(conn)
        if record is not None:
            self._log(record, None)
        return record

    def _take_record(self, conn: Connection) -> CloseRecord | None:
        if not unwritten.forget(conn):
            return None
        return conn.record(time.perf_counter() - conn.started)

    def _log(self, record: CloseRecord, exc: BaseException | None) -> None:
        """A broken log handler must not raise into the server: the connection is over."""
        try:
            log_record(self.logger, record, exc)
        except Exception:
            report_failure(f"closeguard: logging the close record of {record.connection_id}")

    def limit_for(self, scope: Scope) -> int | None:
        limit = self.max_message_size
        if callable(limit):
            limit = limit(scope)
            if not _valid_limit(limit):
                raise ValueError(
                    f"max_message_size({scope.get('path')!r}) returned {limit!r}; "
                    f"it must return {LIMIT_RULE}, or None for no limit"
                )
        return limit


def _valid_limit(limit: object) -> bool:
    return limit is None or (
        isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= MAX_LIMIT
    )
