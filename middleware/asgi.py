"""The ASGI middleware: a thin wrapper that feeds :class:`Connection` and does what it decides."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .closelog import LOGGER_NAME, log_record
from .connection import Connection, State
from .record import CloseRecord

__all__ = ["MaxMessageSize", "WebSocketCloseMiddleware", "connection_id"]

#: A fixed limit in bytes, a per-connection choice (say, by path), or None for no limit.
MaxMessageSize: TypeAlias = "int | Callable[[Scope], int | None] | None"

#: Where closeguard puts its per-connection data in the scope it hands the app.
SCOPE_EXTENSION = "closeguard"


def connection_id(scope: Scope) -> str | None:
    """The id closeguard gave this connection; it is also the record's ``connection_id``."""
    extension = scope.get("extensions", {}).get(SCOPE_EXTENSION)
    return None if extension is None else str(extension["connection_id"])


def _client_text(client: Any) -> str | None:
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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
        on_close: Callable[[CloseRecord], None] | None = None,
        invalid_close: Literal["raise", "replace"] = "raise",
        reraise: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        if invalid_close not in ("raise", "replace"):
            raise ValueError(f"invalid_close must be 'raise' or 'replace', got {invalid_close!r}")
        if isinstance(max_message_size, bool) or not (
            max_message_size is None
            or callable(max_message_size)
            or (isinstance(max_message_size, int) and max_message_size > 0)
        ):
            raise ValueError(
                "max_message_size must be a positive number of bytes, a callable "
                f"scope -> int | None, or None for no limit; got {max_message_size!r}"
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
        await self._guard(scope, receive, send)

    def _limit(self, scope: Scope) -> int | None:
        limit = self.max_message_size
        return limit(scope) if callable(limit) else limit

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        conn_id = uuid.uuid4().hex
        extensions = dict(scope.get("extensions") or {})
        extensions[SCOPE_EXTENSION] = {"connection_id": conn_id}
        scope = {**scope, "extensions": extensions}
        limit = self._limit(scope)
        conn = Connection(
            connection_id=conn_id,
            path=scope.get("path", ""),
            client=_client_text(scope.get("client")),
            max_message_size=limit,
            replace_invalid=self.replace_invalid,
        )
        OPEN = State.OPEN  # a local is the cheapest lookup on the per-message path
        #: A close the server refused to send (daphne); see :meth:`Connection.server_refused_close`.
        refusal: Exception | None = None

        async def send_to_server(message: Message) -> None:
            try:
                await send(message)
            except OSError:
                conn.server_send_failed()
                raise

        async def guarded_receive() -> Message:
            if conn.synthetic_disconnect is not None:
                return conn.synthetic_disconnect
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    # A character is at least one byte: a long string is too big unread,
                    # and ASCII is counted without encoding anything.
                    size = len(text)
                    if not text.isascii() and (limit is None or size <= limit):
                        size = len(text.encode("utf-8", "surrogatepass"))
                else:
                    data = message.get("bytes")
                    size = 0 if data is None else len(data)
                if limit is not None and size > limit:
                    await send_closing(conn.message_too_big())
                    return conn.synthetic_disconnect  # type: ignore[return-value]
                conn.messages_received += 1
                conn.bytes_received += size
            elif message["type"] == "websocket.disconnect":
                conn.server_disconnects(message)
            return message

        async def guarded_send(message: Message) -> None:
            message_type = message["type"]
            if message_type == "websocket.send":
                if conn.state is not OPEN and conn.state is not State.DISCONNECTED:
                    raise conn.app_sends_after_close(message_type)
                text = message.get("text")
                if text is not None:
                    size = _text_size(text)
                else:
                    data = message.get("bytes")
                    size = 0 if data is None else len(data)
                await send_to_server(message)
                conn.messages_sent += 1
                conn.bytes_sent += size
                return
            if message_type == "websocket.close":
                checked = conn.app_closes(message)
                if checked is None:
                    return
                if conn.state is State.REFUSED:  # a refused handshake: the server's HTTP 403
                    await send_to_server(checked)
                else:
                    await send_close(checked, ours=False)
                return
            if message_type == "websocket.accept":
                conn.app_accepts()
            elif message_type == "websocket.http.response.start":
                conn.app_denies(int(message.get("status", 0)))
            await send_to_server(message)

        async def send_close(message: Message, *, ours: bool) -> None:
            """Send a checked close; if the transport is already gone, say so.

            A server that raises anything else cannot send this code (daphne allows only 1000
            and 3000-4999): the error is kept, not given to the app, and raised to the server
            when the app is done, because an exception is what makes daphne close (1011).
            """
            nonlocal refusal
            try:
                await send(message)
            except OSError:
                if not ours:
                    conn.server_send_failed()
                    raise
                conn.closing_send_failed()
            except Exception as exc:
                conn.server_refused_close(message, exc)
                refusal = exc

        async def send_closing(message: Message) -> None:
            await send_close(message, ours=True)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BaseException as exc:
            if conn.is_ordinary_end(exc):
                self._finish(conn, started)
                if refusal is not None:
                    raise refusal from None
                return
            closing = conn.app_raised(exc)
            if closing is not None:
                await send_closing(closing)
            swallow = not self.reraise and isinstance(exc, Exception)
            # The traceback goes to the log once: ours when we swallow, the server's otherwise.
            self._finish(conn, started, exc if swallow else None)
            if not swallow:
                raise
            if refusal is not None:
                raise refusal from None  # not the app's exception: its text stays out
        else:
            closing = conn.app_returned()
            if closing is not None:
                await send_closing(closing)
            self._finish(conn, started)
            if refusal is not None:
                raise refusal

    def _finish(
        self, conn: Connection, started: float, unraised: BaseException | None = None
    ) -> None:
        record = conn.record(time.perf_counter() - started)
        log_record(self.logger, record, exc_info=unraised)
        if self.on_close is not None:
            try:
                self.on_close(record)
            except Exception:
                # The connection is over; a broken hook must not turn that into a crash.
                self.logger.exception(
                    "closeguard on_close hook failed for %s", record.connection_id
                )
