"""The ASGI middleware: a thin wrapper that feeds :class:`Connection` and does what it decides."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .closelog import LOGGER_NAME, log_record
from .connection import CLOSE_SENT_STATES, Connection, State
from .record import CloseRecord

__all__ = ["MaxMessageSize", "WebSocketCloseMiddleware", "connection_id"]

#: A fixed limit in bytes, a per-connection choice (say, by path), or None for no limit.
MaxMessageSize: TypeAlias = "int | Callable[[Scope], int | None] | None"
OnClose: TypeAlias = Callable[[CloseRecord], None]
#: Messages and bytes received, messages and bytes sent.
Counts: TypeAlias = tuple[int, int, int, int]

#: The scope key under which the app finds closeguard's id for its connection.
SCOPE_KEY = "closeguard.connection_id"

#: The largest limit one may set: any larger is no limit in practice, and the 1009 reason
#: naming it must still fit in 123 bytes.
MAX_LIMIT = 2**62
LIMIT_RULE = f"a whole number of bytes from 1 to {MAX_LIMIT}"
#: "No limit", as a number above MAX_LIMIT: one comparison per message, not a None check too.
NO_LIMIT = sys.maxsize

_OPEN = State.OPEN


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
        app: ASGIApp,
        *,
        max_message_size: MaxMessageSize = 1_048_576,
        on_close: OnClose | None = None,
        invalid_close: Literal["raise", "replace"] = "raise",
        reraise: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        if invalid_close not in ("raise", "replace"):
            raise ValueError(f"invalid_close must be 'raise' or 'replace', got {invalid_close!r}")
        if not (callable(max_message_size) or _valid_limit(max_message_size)):
            raise ValueError(
                f"max_message_size must be {LIMIT_RULE}, a callable scope -> int | None, "
                f"or None for no limit; got {max_message_size!r}"
            )
        self.app = app
        self.max_message_size = max_message_size
        self.on_close = on_close
        self.replace_invalid = invalid_close == "replace"
        self.reraise = reraise
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        # ``receive`` and ``send`` are closures over locals of this one coroutine: a cell is
        # the cheapest state to read and bump per message, and no second coroutine lives as
        # long as the connection. Everything off the per-message path is ``guard``'s.
        guard = _Guard(self, scope, receive, send)
        conn = guard.conn
        limit = text_limit = NO_LIMIT  # set in the try below: a failing limit is a failure
        received = received_bytes = sent = sent_bytes = 0

        async def guarded_receive() -> Message:
            nonlocal received, received_bytes, receive
            while True:
                message = await receive()
                text = message.get("text")
                if text is not None:
                    size = len(text)
                    if size <= text_limit or not _text_too_big(text, size, limit):
                        break
                else:
                    data = message.get("bytes")
                    if data is None:  # not a data message
                        if message["type"] == "websocket.disconnect":
                            conn.server_disconnects(message)
                        return message
                    size = len(data)
                    if size <= limit:
                        break
                # Over the limit: this message is never delivered.
                receive = guard.disconnected
                closing = await guard.too_big()
                if closing is not None:
                    return closing
                # The app had closed first: read on, to the disconnect the server reports.
            received += 1
            received_bytes += size
            return message

        def guarded_send(message: Message) -> Awaitable[None]:
            # A plain function handing back the server's own awaitable: data costs checks,
            # not another coroutine. Everything else goes the slow way, through ``guard``.
            nonlocal sent, sent_bytes
            if message["type"] == "websocket.send" and conn.state is _OPEN:
                text = message.get("text")
                sent += 1
                sent_bytes += len(text) if text is not None else len(message.get("bytes") or b"")
                return send(message)
            return guard.send_other(message)

        # ASGI's send is an awaitable callable, and callers that check (asgiref's
        # async_to_sync warns on an unmarked one, so fails under -W error) look for the
        # coroutine-function mark in the function's __dict__: one dict shared by every
        # connection, not one each (~300 bytes). Nothing sets attributes on an ASGI send;
        # whatever did would set them on every connection's.
        guarded_send.__dict__ = COROUTINE_FUNCTION_MARK

        try:
            limit = guard.set_limit(scope)
            # A character is at least one byte and at most four: text of up to a quarter of
            # the limit in characters cannot be too big, and is never measured twice.
            text_limit = limit // 4
            await self.app(scope, guarded_receive, guarded_send)
        except BaseException as exc:
            to_raise = await guard.failed(exc, (received, received_bytes, sent, sent_bytes))
            if to_raise is exc:
                raise
            if to_raise is not None:
                raise to_raise from None  # not the app's exception: its text stays out
        else:
            refusal = await guard.returned((received, received_bytes, sent, sent_bytes))
            if refusal is not None:
                raise refusal

    def limit_for(self, scope: Scope) -> int:
        limit = self.max_message_size
        if callable(limit):
            limit = limit(scope)
            if not _valid_limit(limit):
                raise ValueError(
                    f"max_message_size({scope.get('path')!r}) returned {limit!r}; "
                    f"it must return {LIMIT_RULE}, or None for no limit"
                )
        return NO_LIMIT if limit is None else limit


def _valid_limit(limit: object) -> bool:
    return limit is None or (
        isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= MAX_LIMIT
    )


def _text_too_big(text: str, length: int, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` bytes in UTF-8, encoding it only when its length in
    characters does not already say."""
    if length > limit:
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limit


class _Guard:
    """One connection's decisions and everything off the per-message path.

    The per-message counters are kept by the ``receive`` and ``send`` closures and handed
    over once, at the end.
    """

    __slots__ = (
        "conn",
        "middleware",
        "refusal",
        "server_receive",
        "server_send",
        "started",
    )

    def __init__(
        self, middleware: WebSocketCloseMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.started = time.perf_counter()
        self.middleware = middleware
        self.server_receive = receive
        self.server_send = send
        conn_id = os.urandom(16).hex()
        # The scope is this connection's own dict (ASGI), and Starlette too adds its keys to
        # it: one more key costs nothing, where a copy of the scope would cost its size.
        scope[SCOPE_KEY] = conn_id
        self.conn = Connection(
            connection_id=conn_id,
            path=scope.get("path", ""),
            client=scope.get("client"),
            max_message_size=None,
            replace_invalid=middleware.replace_invalid,
        )
        #: A valid close the server would not send (daphne), raised to it when the app ends.
        self.refusal: Exception | None = None

    def set_limit(self, scope: Scope) -> int:
        limit = self.middleware.limit_for(scope)
        self.conn.max_message_size = None if limit == NO_LIMIT else limit
        return limit

    async def too_big(self) -> Message | None:
        """An inbound message is over the limit: close 1009 and return the disconnect the app
        hears instead, now and on every later receive.

        After the app's own close no second close may go out: None, and the app reads on.
        """
        conn = self.conn
        if conn.state is not _OPEN:
            return None
        await self._send_own_close(conn.message_too_big())
        return await self.disconnected()

    async def disconnected(self) -> Message:
        """What ``receive`` gives once a message was over the limit."""
        disconnect = self.conn.synthetic_disconnect
        if disconnect is None:  # the app had closed first: the server says how it ended
            return await self.server_receive()
        return disconnect

    async def send_other(self, message: Message) -> None:
        conn = self.conn
        message_type = message["type"]
        if message_type == "websocket.send":
            if conn.state in CLOSE_SENT_STATES:
                raise conn.app_sends_after_close(message_type)
            # Before accept, or with the peer gone, the server answers with its own error.
        elif message_type == "websocket.close":
            checked = conn.app_closes(message)
            if checked is None:
                return
            if conn.state is not State.REFUSED:  # a refused handshake is the server's 403
                await self._send_app_close(checked)
                return
            message = checked
        elif message_type == "websocket.accept":
            conn.app_accepts()
        elif message_type == "websocket.http.response.start":
            conn.app_denies(int(message.get("status", 0)))
        try:
            await self.server_send(message)
        except OSError:
            conn.server_send_failed()
            raise

    async def _send_app_close(self, message: Message) -> None:
        try:
            await self.server_send(message)
        except OSError:
            self.conn.close_send_failed()  # the peer left first: this close never went out
            raise
        except Exception as error:
            self._refused(message, error)

    async def _send_own_close(self, message: Message, failure: BaseException | None = None) -> None:
        """Send closeguard's own close; if the transport is already gone, say so."""
        try:
            await self.server_send(message)
        except OSError:
            self.conn.close_send_failed(failure)
        except Exception as error:
            self._refused(message, error)

    def _refused(self, message: Message, error: Exception) -> None:
        """The server raised for a valid close: it cannot send that code (daphne allows only
        1000 and 3000-4999). The error is kept, not given to the app, and raised to the server
        when the app is done, because an exception is what makes daphne close (with 1011)."""
        self.conn.server_refused_close(message, error)
        self.refusal = error

    # How the app ended --------------------------------------------------------------------

    async def failed(self, exc: BaseException, counts: Counts) -> BaseException | None:
        """The app raised: close as due, record, and say what to raise to the server."""
        conn = self.conn
        if not conn.is_ordinary_end(exc):
            closing = conn.app_raised(exc)
            if closing is not None:
                # If this fails because the peer is gone, a disconnect error was ordinary.
                await self._send_own_close(closing, exc)
        if conn.is_ordinary_end(exc):
            self._finish(counts)
            return self.refusal
        swallow = not self.middleware.reraise and isinstance(exc, Exception)
        # The traceback goes to the log once: ours when we swallow, the server's otherwise.
        self._finish(counts, exc if swallow else None)
        return self.refusal if swallow else exc

    async def returned(self, counts: Counts) -> Exception | None:
        closing = self.conn.app_returned()
        if closing is not None:
            await self._send_own_close(closing)
        self._finish(counts)
        return self.refusal

    def _finish(self, counts: Counts, unraised: BaseException | None = None) -> None:
        middleware = self.middleware
        fields = self.conn.fields(time.perf_counter() - self.started, counts)
        log_record(middleware.logger, fields, exc_info=unraised)
        if middleware.on_close is not None:
            record = CloseRecord(**fields)
            try:
                middleware.on_close(record)
            except Exception:
                # The connection is over; a broken hook must not turn that into a crash.
                middleware.logger.exception(
                    "closeguard on_close hook failed for %s", record.connection_id
                )


def _coroutine_function_mark() -> dict[str, Any]:
    """The attributes that make a plain function pass for a coroutine function: with
    ``inspect`` (3.12+) and ``asyncio`` (whose 3.10 and 3.11 check is what asgiref uses)."""

    def marked() -> None:
        pass

    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(marked)
    legacy_marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if legacy_marker is not None:  # asyncio.iscoroutinefunction's own mark (gone in time)
        marked._is_coroutine = legacy_marker  # type: ignore[attr-defined]
    return marked.__dict__


#: Shared by every connection's ``send``: assigning a function's __dict__ costs one pointer.
COROUTINE_FUNCTION_MARK = _coroutine_function_mark()
