"""The life of one WebSocket connection as closeguard sees it, with every decision and no I/O.

The ASGI wrapper (``asgi.py``) feeds this object what the app and the server said, and sends
what it is told to. Nothing here awaits, reads a clock or logs, so every rule is tested
without a server. The per-message counters are kept by the wrapper, which hands them over at
the end: a method call per message would cost more than the work it does.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from .codes import (
    CloseCode,
    InvalidCloseCode,
    InvalidCloseReason,
    check_close,
    substitute_close,
)
from .record import CloseRecord, Initiator

__all__ = ["CLOSE_SENT_STATES", "CloseAlreadySent", "Connection", "State"]

#: The reason closeguard puts on a 1011. Exception text never goes on the wire: it may hold
#: secrets, and the client cannot act on it anyway.
INTERNAL_ERROR_REASON = "internal error"


class CloseAlreadySent(RuntimeError):
    """The app tried to send after a Close frame went out (RFC 6455 5.5.1 forbids it)."""


class State(Enum):
    """Where the connection stands. Every state after OPEN is final for the record."""

    CONNECTING = "connecting"  # before accept: a close or denial is a refused handshake
    OPEN = "open"
    REFUSED = "refused"  # the app closed or answered with an HTTP response before accept
    CLOSED_BY_APP = "closed by app"  # the app's close went out
    CLOSED_BY_MIDDLEWARE = "closed by middleware"  # closeguard's 1009, 1011 or 1000 went out
    DISCONNECTED = "disconnected"  # the server reported the peer gone, or the transport failed


#: States in which a Close frame went out: nothing may follow it.
CLOSE_SENT_STATES = frozenset({State.CLOSED_BY_APP, State.CLOSED_BY_MIDDLEWARE})

#: States in which the connection is over as far as the app's exceptions are concerned.
ENDED_STATES = frozenset({State.CLOSED_BY_APP, State.CLOSED_BY_MIDDLEWARE, State.DISCONNECTED})

#: What the app may raise once the connection has ended without it being an error: Starlette's
#: disconnect exception, and the OSError subclasses servers raise from ``send`` (ASGI 2.4).
ORDINARY_END_EXCEPTIONS = (WebSocketDisconnect, OSError)


def qualified_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def client_text(client: object) -> str | None:
    """``host:port`` (``[host]:port`` for IPv6) from the scope's ``client`` pair; text as is."""
    if isinstance(client, str):
        return client or None
    if not isinstance(client, (tuple, list)) or len(client) < 2:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def close_message(code: int, reason: str) -> dict[str, Any]:
    # A plain int, not a CloseCode: daphne's WebSocket library rejects anything whose type is
    # not exactly int, and the ASGI spec says int.
    return {"type": "websocket.close", "code": int(code), "reason": reason}


class Connection:
    """Decisions for one connection, in the order the ASGI events arrive."""

    __slots__ = (
        "accepted",
        "client",
        "code",
        "connection_id",
        "exception",
        "http_status",
        "initiator",
        "max_message_size",
        "path",
        "reason",
        "replace_invalid",
        "requested_code",
        "state",
        "synthetic_disconnect",
        "violation",
    )

    def __init__(
        self,
        *,
        connection_id: str,
        path: str,
        client: object,
        max_message_size: int | None,
        replace_invalid: bool,
    ) -> None:
        self.connection_id = connection_id
        self.path = path
        #: The scope's (host, port), or text: made text only for the record, as the scope
        #: keeps the pair alive anyway and a string per idle connection is memory.
        self.client = client
        self.max_message_size = max_message_size
        self.replace_invalid = replace_invalid
        self.state = State.CONNECTING
        self.accepted = False
        self.code: int | None = None
        self.reason = ""
        self.initiator: Initiator = "app"
        self.requested_code: int | None = None
        self.violation: str | None = None
        self.exception: str | None = None
        self.http_status: int | None = None
        #: The disconnect the app is given instead of an oversized message, then on every
        #: later receive: the app must not see what the client sent after it.
        self.synthetic_disconnect: dict[str, Any] | None = None

    # What the app sends -------------------------------------------------------------------

    def app_accepts(self) -> None:
        if self.state is State.CONNECTING:
            self.state = State.OPEN
            self.accepted = True

    def app_denies(self, status: int) -> None:
        """The app answered the handshake with its own HTTP response."""
        if self.state is State.CONNECTING:
            self.state = State.REFUSED
            self.http_status = status

    def app_closes(self, message: Message) -> Message | None:
        """Check the app's ``websocket.close``; return what to send, or None to send nothing.

        Raises :class:`InvalidCloseCode` / :class:`InvalidCloseReason` for a close the rules
        forbid (when not replacing), and :class:`CloseAlreadySent` for a second close.
        """
        state = self.state
        if state is State.CONNECTING:
            # No WebSocket exists yet: the server turns this into HTTP 403 and no code
            # reaches the client, so there is nothing on the wire to check.
            self.state = State.REFUSED
            self.http_status = 403
            return message
        if state is State.CLOSED_BY_APP:
            raise CloseAlreadySent(
                f"cannot send 'websocket.close': this connection was already closed with "
                f"code {self.code}; nothing may follow a Close frame (RFC 6455 5.5.1)"
            )
        if state is not State.OPEN:
            # The peer is gone, or closeguard closed and told the app so with a disconnect:
            # the app's close is the usual answer to a disconnect and has nobody to reach.
            # (REFUSED never gets here through Starlette; for a raw app the server decides.)
            return message if state is State.REFUSED else None
        code = message.get("code", CloseCode.NORMAL_CLOSURE)
        reason = message.get("reason") or ""
        try:
            check_close(code, reason)
        except (InvalidCloseCode, InvalidCloseReason) as exc:
            self.requested_code = code if isinstance(code, int) else None
            self.violation = str(exc)
            if not self.replace_invalid:
                raise
            code, reason = substitute_close(code, reason)
        self.state = State.CLOSED_BY_APP
        self._ended(code, reason, "app")
        return close_message(code, reason)

    def app_sends_after_close(self, message_type: str) -> CloseAlreadySent:
        """The error for data after a Close frame; raised by the wrapper, which knows the state."""
        who = "closeguard" if self.state is State.CLOSED_BY_MIDDLEWARE else "the app"
        return CloseAlreadySent(
            f"cannot send {message_type!r}: {who} already closed this connection with code "
            f"{self.code}; nothing may follow a Close frame (RFC 6455 5.5.1)"
        )

    # What the server delivers -------------------------------------------------------------

    def server_disconnects(self, message: Message) -> None:
        """The server reported the peer gone (``websocket.disconnect``)."""
        if self.state in (State.OPEN, State.CONNECTING):
            self.state = State.DISCONNECTED
            code = message.get("code")
            self._ended(
                code if isinstance(code, int) else CloseCode.NO_STATUS_RCVD,
                message.get("reason") or "",
                "client",
            )

    def server_send_failed(self) -> None:
        """The server raised OSError from ``send``: the transport is gone (ASGI 2.4)."""
        if self.state in (State.OPEN, State.CONNECTING):
            self.state = State.DISCONNECTED
            self._ended(CloseCode.ABNORMAL_CLOSURE, "", "client")

    def message_too_big(self) -> dict[str, Any]:
        """An inbound message exceeded the limit: the close to send (1009 naming the limit).

        Afterwards :attr:`synthetic_disconnect` holds what the app receives instead.
        """
        reason = f"message exceeds the limit of {self.max_message_size} bytes"
        self.state = State.CLOSED_BY_MIDDLEWARE
        self._ended(CloseCode.MESSAGE_TOO_BIG, reason, "middleware")
        self.synthetic_disconnect = {
            "type": "websocket.disconnect",
            "code": int(CloseCode.MESSAGE_TOO_BIG),
            "reason": reason,
        }
        return close_message(CloseCode.MESSAGE_TOO_BIG, reason)

    # How the app ended --------------------------------------------------------------------

    def is_ordinary_end(self, exc: BaseException) -> bool:
        """Whether ``exc`` only says the peer left: the usual way a Starlette endpoint ends."""
        return (
            self.exception is None
            and self.state in ENDED_STATES
            and isinstance(exc, ORDINARY_END_EXCEPTIONS)
        )

    def app_raised(self, exc: BaseException) -> dict[str, Any] | None:
        """The app failed: return the close to send (1011), or None when none is due."""
        self.exception = qualified_name(exc)
        # Only an Exception earns a 1011: CancelledError and friends mean the task is being
        # torn down, and awaiting a send there is not ours to do.
        if self.state is State.OPEN and isinstance(exc, Exception):
            self.state = State.CLOSED_BY_MIDDLEWARE
            self._ended(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON, "middleware")
            return close_message(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
        return None

    def app_returned(self) -> dict[str, Any] | None:
        """The app returned: return the close it forgot (1000), or None."""
        if self.state is State.OPEN:
            self.state = State.CLOSED_BY_MIDDLEWARE
            self._ended(CloseCode.NORMAL_CLOSURE, "", "middleware")
            return close_message(CloseCode.NORMAL_CLOSURE, "")
        return None

    def close_send_failed(self, failure: BaseException | None = None) -> None:
        """A close (the app's or closeguard's) could not be sent: the transport went first.

        If the app's ``failure`` was a disconnect error, it came from a send to a peer that
        was already gone (closeguard does not watch the server's errors on the per-message
        path): an ordinary end after all, not an app error.
        """
        self.state = State.DISCONNECTED
        self._ended(CloseCode.ABNORMAL_CLOSURE, "", "client")
        if isinstance(failure, ORDINARY_END_EXCEPTIONS):
            self.exception = None

    def server_refused_close(self, message: Message, error: Exception) -> None:
        """The server raised from ``send`` for a valid close: it cannot send that code.

        daphne's WebSocket library sends only 1000 and 3000-4999 (not 1001, 1008, 1009, 1011,
        1012, ...) and raises for the rest. Its one other way to close is its own error path:
        when the app's task ends with an exception, daphne sends 1011 with no reason. The
        middleware makes sure an exception reaches it, so the record says 1011.
        """
        code = message.get("code")
        if self.requested_code is None and self.initiator == "app" and isinstance(code, int):
            self.requested_code = code
        refusal = f"the server refused to send close code {code} ({error}); it closes with 1011"
        self.violation = refusal if self.violation is None else f"{self.violation}; {refusal}"
        self.state = State.CLOSED_BY_MIDDLEWARE
        self._ended(CloseCode.INTERNAL_ERROR, "", "middleware")

    # The record ---------------------------------------------------------------------------

    def _ended(self, code: int, reason: str, initiator: Initiator) -> None:
        self.code = int(code)
        self.reason = reason
        self.initiator = initiator

    def fields(self, duration: float, counts: tuple[int, int, int, int]) -> dict[str, Any]:
        """The record's fields as a dict (``CloseRecord.as_dict()``'s shape), with the
        counts the I/O side kept (messages and bytes received, messages and bytes sent).

        What the log line is made from: the :class:`CloseRecord` is built only for a hook.
        """
        return {
            "connection_id": self.connection_id,
            "path": self.path,
            "client": client_text(self.client),
            "accepted": self.accepted,
            "code": self.code,
            "reason": self.reason,
            "initiator": self.initiator,
            "requested_code": self.requested_code,
            "violation": self.violation,
            "exception": self.exception,
            "http_status": self.http_status,
            "duration": duration,
            "messages_received": counts[0],
            "messages_sent": counts[2],
            "bytes_received": counts[1],
            "bytes_sent": counts[3],
        }

    def record(
        self, duration: float, counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    ) -> CloseRecord:
        return CloseRecord(**self.fields(duration, counts))
