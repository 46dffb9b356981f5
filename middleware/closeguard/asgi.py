"""The ASGI middleware: a thin wrapper that feeds :class:`Connection` and does what it decides."""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing.util
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeAlias

import anyio
from starlette.types import Message, Receive, Scope, Send

from .closelog import LOGGER_NAME, log_record
from .connection import Connection, Ending, State
from .record import CloseRecord

__all__ = ["ASGIApplication", "MaxMessageSize", "WebSocketCloseMiddleware", "connection_id"]

#: Any ASGI 3 application. Frameworks type scope, receive and send each their own way
#: (Starlette as mappings; Litestar, and Quart through hypercorn, as TypedDicts), and a
#: callable's parameters are contravariant: only ``Any`` admits every one of them under
#: ``mypy --strict``, and lets the middleware stand wherever the app stood.
ASGIApplication: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

#: A fixed limit in bytes, a per-connection choice (say, by path), or None for no limit.
MaxMessageSize: TypeAlias = "int | Callable[[Scope], int | None] | None"
#: A hook given every record: a function, or an ``async def`` one, which closeguard awaits.
OnClose: TypeAlias = Callable[[CloseRecord], "Awaitable[None] | None"]

#: The scope key under which the app finds closeguard's id for its connection.
SCOPE_KEY = "closeguard.connection_id"

#: The largest limit one may set: any larger is no limit in practice, and the 1009 reason
#: naming it must still fit in 123 bytes.
MAX_LIMIT = 2**62
LIMIT_RULE = f"a whole number of bytes from 1 to {MAX_LIMIT}"

#: ``State.OPEN`` as a plain name: on CPython 3.11 an enum member read through its class costs
#: 45 ns (the metaclass's lookup), a sixth of closeguard's whole per-message work.
OPEN = State.OPEN

#: How long the connection's task waits for the ``async`` hooks of its record. They run even
#: when the task is being cancelled (a shutdown), so a hook that hangs must not hold it forever.
ASYNC_HOOK_WAIT = 5.0

#: How long to wait, after a send found the peer gone, for the server to say how the
#: connection ended. Every server measured has queued that report by the time send raises.
SERVER_REPORT_WAIT = 1.0


#: Connections whose record is not yet written, each with its middleware. A server that exits
#: without ending its app tasks (daphne at SIGTERM, granian's workers at times) leaves some
#: here, and the process's exit writes them, so that no connection goes unrecorded.
_unwritten: dict[Connection, WebSocketCloseMiddleware] = {}


def _write_unwritten_records() -> None:
    for conn, middleware in list(_unwritten.items()):
        conn.process_exiting()
        middleware.write_record_at_exit(conn)


# A multiprocessing finalizer, not atexit: it runs at a normal exit too (multiprocessing's own
# atexit hook runs it), and also in a multiprocessing child (granian's workers), which leaves
# through os._exit after its finalizers and never runs atexit.
multiprocessing.util.Finalize(None, _write_unwritten_records, exitpriority=0)


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
        self.on_close: tuple[OnClose, ...] = _hooks(on_close)
        self.replace_invalid = invalid_close == "replace"
        self.reraise = reraise
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Typed as loosely as ASGIApplication, so that an app's own framework takes the
        # middleware in its place; one coroutine, not a second one for WebSockets, since each
        # idle connection keeps its frames (a second one: 232 bytes, measured).
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        conn = Connection(
            started=time.perf_counter(),
            connection_id=os.urandom(16).hex(),
            path=scope.get("path", ""),
            client=scope.get("client"),
            max_message_size=None,
            replace_invalid=self.replace_invalid,
            reraise=self.reraise,
        )
        # The scope is this connection's own dict (ASGI); Starlette adds its keys to it too.
        scope[SCOPE_KEY] = conn.connection_id
        server = ServerCalls(conn, receive, send)
        _unwritten[conn] = self
        limit: int | None = None
        #: Once a message was over the limit, the app hears only this disconnect.
        too_big_disconnect: Message | None = None

        async def guarded_receive() -> Message:
            nonlocal too_big_disconnect
            while too_big_disconnect is None:
                message: Message = await receive()
                # The size rule (connection.message_size) written out: it runs for every
                # message, and the calls would cost more than the rule itself.
                text = message.get("text")
                if text is None:
                    data = message.get("bytes")
                    if data is None:  # not a data message
                        if message["type"] == "websocket.disconnect":
                            conn.server_disconnects(message)
                        return message
                    size = len(data)
                elif text.isascii():
                    size = len(text)
                else:
                    size = len(text.encode("utf-8", "surrogatepass"))
                if limit is None or size <= limit:
                    conn.messages_received += 1
                    conn.bytes_received += size
                    return message
                if conn.state is State.OPEN:  # never delivered: close 1009 instead
                    close, too_big_disconnect = conn.message_too_big()
                    await server.send_close(close)
                # Otherwise the app closed first: read on, to the disconnect the server reports.
            return too_big_disconnect

        async def guarded_send(message: Message) -> None:
            if message["type"] != "websocket.send" or conn.state is not OPEN:
                await server.send_checked(message)
                return
            text = message.get("text")
            if text is None:
                size = len(message.get("bytes") or b"")
            elif text.isascii():
                size = len(text)
            else:
                size = len(text.encode("utf-8", "surrogatepass"))
            try:
                await send(message)
            except OSError:
                conn.peer_gone()
                raise
            conn.messages_sent += 1
            conn.bytes_sent += size

        try:
            limit = self.limit_for(scope)
            conn.max_message_size = limit
            await self.app(scope, guarded_receive, guarded_send)
        except BaseException as exc:
            ending = conn.app_ended(exc)
            await self._end(server, ending, exc)
            if ending.reraise:
                raise
        else:
            await self._end(server, conn.app_ended(None), None)
        if server.error is not None:
            # A close the server would not send (daphne): its own error path closes, with 1011.
            raise server.error from None

    async def _end(self, server: ServerCalls, ending: Ending, exc: BaseException | None) -> None:
        """Send closeguard's close if one is due, then write the one record, whatever
        happens meanwhile: a cancellation still leaves its record, then goes on."""
        try:
            if ending.close is not None:
                await server.send_close(ending.close)
            if server.conn.awaits_server_report():
                await server.read_report()
        finally:
            # None when the process's exit wrote it already.
            record = self._take_record(server.conn)
            if record is not None:
                pending = self.publish(record, exc if ending.log_traceback else None)
                if pending:
                    await self.await_hooks(record, pending)

    async def await_hooks(
        self, record: CloseRecord, pending: list[tuple[OnClose, Awaitable[None]]]
    ) -> None:
        """Await what the ``async`` hooks of a record gave back, shielded: a shutdown
        cancelling the task must not cut them off, nor may a hook that hangs hold it forever."""
        awaited = 0  # when the wait runs out, the hook it was on is pending[awaited]
        with anyio.move_on_after(ASYNC_HOOK_WAIT, shield=True) as waited:
            for hook, result in pending:
                try:
                    await result
                except Exception:
                    self._hook_failed(hook, record)
                awaited += 1
        if waited.cancelled_caught:
            hook, _ = pending[awaited]
            self._hook_failed(hook, record, f"took over {ASYNC_HOOK_WAIT:g} s")
            for _, result in pending[awaited + 1 :]:  # never started: closed, they do not warn
                if inspect.iscoroutine(result):
                    result.close()

    def write_record_at_exit(self, conn: Connection) -> None:
        """Write the record of a connection the server never ended, as its process exits.
        No event loop runs any more, so an ``async`` hook gets a loop of its own."""
        record = self._take_record(conn)
        if record is None:
            return
        for hook, result in self.publish(record):
            coroutine = _awaited(result)
            try:
                asyncio.run(coroutine)
            except Exception:
                # Never started when a loop still runs in this thread: closed, they do not
                # warn that they were never awaited.
                coroutine.close()
                if inspect.iscoroutine(result):
                    result.close()
                self._hook_failed(hook, record)

    def _take_record(self, conn: Connection) -> CloseRecord | None:
        if _unwritten.pop(conn, None) is None:
            return None
        return conn.record(time.perf_counter() - conn.started)

    def publish(
        self, record: CloseRecord, exc: BaseException | None = None
    ) -> list[tuple[OnClose, Awaitable[None]]]:
        """Log the record, then hand it to each hook in turn; return what ``async`` hooks
        gave back, for the caller to await. Neither a broken log handler nor a broken hook
        may skip the others or raise into the server: the connection is over."""
        try:
            log_record(self.logger, record, exc)
        except Exception:
            _report_failure(f"closeguard: logging the close record of {record.connection_id}")
        pending: list[tuple[OnClose, Awaitable[None]]] = []
        for hook in self.on_close:
            try:
                result = hook(record)
            except Exception:
                self._hook_failed(hook, record)
                continue
            if inspect.isawaitable(result):
                pending.append((hook, result))
        return pending

    def _hook_failed(self, hook: OnClose, record: CloseRecord, how: str = "failed") -> None:
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
            _report_failure(f"closeguard: the on_close hook for {record.connection_id}")

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


def _hooks(on_close: OnClose | Sequence[OnClose] | None) -> tuple[OnClose, ...]:
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


def _valid_limit(limit: object) -> bool:
    return limit is None or (
        isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= MAX_LIMIT
    )


def _report_failure(what: str) -> None:
    """Tell stderr, as logging's own handleError does, when the log itself cannot be used."""
    print(f"{what} failed:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)


class ServerCalls:
    """The server's ``receive`` and ``send`` for everything off the per-message path, each
    call followed by telling the :class:`Connection` what the server did."""

    __slots__ = ("conn", "error", "receive", "send")

    def __init__(self, conn: Connection, receive: Receive, send: Send) -> None:
        self.conn = conn
        self.receive = receive
        self.send = send
        #: An error the server raised for a valid close, raised to it when the app is done.
        self.error: Exception | None = None

    async def send_checked(self, message: Message) -> None:
        """Every message but data on an open connection: accept, close, HTTP denial, and data
        the rules may refuse (after a close), each checked by the core first."""
        conn = self.conn
        message_type = message["type"]
        if message_type == "websocket.close":
            checked = conn.app_closes(message)
            if checked is None:
                return
            if conn.state is not State.REFUSED:
                await self.send_close(checked, raise_peer_gone=True)
                return
            message = checked  # before accept: the server answers with HTTP 403
        elif message_type == "websocket.send":
            conn.check_data_allowed(message_type)
            # Before accept, or with the peer gone, the server answers with its own error.
        elif message_type == "websocket.http.response.start":
            conn.app_denies(int(message.get("status", 0)))
        try:
            await self.send(message)
        except OSError:
            conn.peer_gone()
            raise
        if message_type == "websocket.accept":
            # Only now: a server may refuse an accept (a header it cannot send), and then the
            # client gets the server's answer, not a WebSocket.
            conn.server_accepted()

    async def send_close(self, message: Message, *, raise_peer_gone: bool = False) -> None:
        """Hand a close to the server and tell the core when it did not go out.

        A peer already gone is raised to the app only for the app's own close, as the server
        would have; any other error is the server's, kept for when the app is done.
        """
        try:
            await self.send(message)
        except OSError:
            self.conn.peer_gone()
            if raise_peer_gone:
                raise
        except Exception as error:
            self.conn.close_failed(message, error)
            self.error = error
        except BaseException:
            self.conn.close_interrupted()
            raise

    async def read_report(self) -> None:
        """Read what the server says of the end of a connection whose peer a send found gone
        (``websocket.disconnect``): the client's close, or a lost connection."""
        with anyio.move_on_after(SERVER_REPORT_WAIT):
            while self.conn.awaits_server_report():
                try:
                    message = await self.receive()
                except Exception:
                    return  # a server that will not be asked again: the record says 1006
                if message["type"] == "websocket.disconnect":
                    self.conn.server_disconnects(message)
