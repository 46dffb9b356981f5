"""The life of one WebSocket connection as closeguard sees it: every decision, and no I/O.

The ASGI wrapper (``asgi.py``) hands this object every message that passes, each way, and
tells it what the server did; it carries out what the object answers, as websockets' sans-I/O
protocol is driven. Each event is one method named for who acts: ``app_sends``, ``app_ends``,
``server_delivers``, ``server_accepts``, ``server_loses_peer`` and so on. Nothing here awaits,
reads a clock or logs, so every rule, the end of a connection above all, is tested without a
server.
"""

from __future__ import annotations

import sys
from typing import Final, NamedTuple

from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from .codes import (
    CloseCode,
    InvalidCloseCode,
    InvalidCloseReason,
    check_close,
    substitute_close,
)
from .policies import POLICY_CLOSES, Watch
from .record import CloseRecord, Initiator

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio's own dependency there
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "CloseAlreadySent",
    "CloseInstead",
    "Connection",
    "Ending",
    "State",
    "format_client",
    "message_size",
]

#: The reason closeguard puts on a drain's closes: a short token a client program can match.
DRAINING_REASON = "draining"
#: The reason of the 1012 closeguard sends when the server tears down a connection still open:
#: none, as uvicorn's own 1012 at its shutdown has none, so that the record says what the
#: client got wherever both go out (uvicorn's legacy implementation takes the second silently).
SHUTDOWN_REASON = ""

#: The reason closeguard puts on a 1011. Exception text never goes on the wire: it may hold
#: secrets, and the client cannot act on it anyway.
INTERNAL_ERROR_REASON = "internal error"


class CloseAlreadySent(RuntimeError):
    """The app tried to send after a Close frame went out (RFC 6455 5.5.1 forbids it)."""


class State:
    """Where the connection stands. Every state after OPEN is final for the record.

    Plain strings rather than an Enum: the state is read for every message sent, and on
    CPython 3.11 reading an Enum member through its class costs 76 ns (28 ns on 3.12).
    """

    CONNECTING: Final = "connecting"  # before the server took an accept
    OPEN: Final = "open"
    REFUSED: Final = "refused"  # the app closed or answered with an HTTP response before accept
    CLOSED_BY_APP: Final = "closed by app"  # the app's close was handed to the server
    CLOSED_BY_MIDDLEWARE: Final = "closed by middleware"  # closeguard's 1009, 1011 or 1000 was
    DISCONNECTED: Final = "disconnected"  # the server reported the peer gone, or a send did
    TORN_DOWN: Final = "torn down"  # the server cancelled the app's task: nothing more is known


#: States in which a Close frame was handed to the server: no data may follow it.
CLOSE_SENT_STATES = frozenset({State.CLOSED_BY_APP, State.CLOSED_BY_MIDDLEWARE})

#: States in which the connection is over, so that an exception saying so is no failure.
ENDED_STATES = CLOSE_SENT_STATES | {State.DISCONNECTED}

#: What an app raises once the connection has ended without it being an error: Starlette's
#: disconnect exception, and the OSError subclasses servers raise from ``send`` (ASGI 2.4).
ORDINARY_END_EXCEPTIONS = (WebSocketDisconnect, OSError)


class Ending(NamedTuple):
    """What the wrapper does once the app is done, as :meth:`Connection.app_ended` decides."""

    #: closeguard's own close to hand to the server (1000 or 1011), or None.
    close: Message | None = None
    #: Whether the app's exception goes on to the server (otherwise the app ends quietly).
    reraise: bool = False
    #: Whether the record carries the exception's traceback: only when nobody else will log it.
    log_traceback: bool = False
    #: Whether the server is tearing the task down: the close must go out shielded from the
    #: cancellation, within a bound, or not at all.
    shielded: bool = False


class CloseInstead(NamedTuple):
    """The answer to a message the app must never see: hand ``close`` to the server, and give
    the app ``disconnect`` in its place, now and on every later receive."""

    close: Message
    disconnect: Message
    #: Whether a code the server refuses (daphne: 1001-1014) goes out as 1000 with the same
    #: reason: so for a drain and the close policies, whose reason tells a client what to do.
    #: A 1009 goes the server's own way instead: daphne's 1011.
    fallback: bool = False


def message_size(message: Message) -> int | None:
    """The payload of a ``websocket.receive`` or ``websocket.send`` message in bytes on the
    wire: text as UTF-8; None for a message that carries no data (a connect, a disconnect).
    ``isascii`` is O(1) in CPython, so only other text is encoded (a lone surrogate counts as
    the 3 bytes a lenient encoder writes)."""
    text = message.get("text")
    if text is None:
        data = message.get("bytes")
        return None if data is None else len(data)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions a group holds, however nested, or the lone exception itself. Apps that
    run a handler in a task group (Quart 0.23, anyio's) raise its exception inside a group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]


def qualified_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def format_client(client: object) -> str | None:
    """``host:port`` (``[host]:port`` for IPv6) from the scope's ``client`` pair.

    Port 0 means the port is unknown (uvicorn's ``--proxy-headers`` takes the host from
    X-Forwarded-For and sets 0), so the host stands alone.
    """
    if isinstance(client, str):
        return client or None
    if not isinstance(client, (tuple, list)) or len(client) < 2:
        return None
    host, port = str(client[0]), client[1]
    if port == 0:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def close_message(code: int, reason: str) -> Message:
    # A plain int, not a CloseCode: daphne's WebSocket library rejects anything whose type is
    # not exactly int, and the ASGI spec says int.
    return {"type": "websocket.close", "code": int(code), "reason": reason}


class Connection:
    """Decisions for one connection, in the order the ASGI events arrive."""

    __slots__ = (
        "accepted",
        "app_disconnect",
        "bytes_received",
        "bytes_sent",
        "client",
        "code",
        "connection_id",
        "exception",
        "http_status",
        "initiator",
        "max_message_size",
        "messages_received",
        "messages_sent",
        "path",
        "reason",
        "replace_invalid",
        "requested_code",
        "reraise",
        "started",
        "state",
        "violation",
        "watch",
    )

    def __init__(
        self,
        *,
        connection_id: str,
        path: str,
        client: object,
        max_message_size: int | None,
        replace_invalid: bool = False,
        reraise: bool = True,
        started: float = 0.0,
    ) -> None:
        self.connection_id = connection_id
        self.path = path
        #: The scope's (host, port), made text only for the record.
        self.client = client
        self.max_message_size = max_message_size
        self.replace_invalid = replace_invalid
        self.reraise = reraise
        self.state = State.CONNECTING
        self.accepted = False
        self.code: int | None = None
        self.reason = ""
        self.initiator: Initiator = "app"
        self.requested_code: int | None = None
        self.violation: str | None = None
        self.exception: str | None = None
        self.http_status: int | None = None
        #: When the connection reached the middleware, on the wrapper's clock.
        self.started = started
        #: Data messages and their bytes on the wire (text as UTF-8), each way: the record's
        #: counts, kept here so that a record written at the process's exit has them too.
        self.messages_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        #: Once closeguard closed (1009, a drain), what the app hears in place of anything the
        #: server delivers after: the same disconnect, on every receive.
        self.app_disconnect: Message | None = None
        #: The close policies' clock for this connection, once it is open (None: no policy).
        self.watch: Watch | None = None
        self.bytes_sent = 0

    # What the app sends ------------------------------------------------------------------

    def app_sends_data(self, message: Message) -> bool:
        """Whether ``message`` is data the server may take as it is: a ``websocket.send`` on
        an open connection, counted here. Anything else answers False, and the wrapper hands it
        to :meth:`app_sends`. (The one check made for every message sent, kept apart from the
        others: the wrapper's own test of the message's type would cost more, measured.)"""
        if self.state is State.OPEN and message["type"] == "websocket.send":
            self.messages_sent += 1
            self.bytes_sent += message_size(message) or 0  # 0: a send with no payload at all
            return True
        return False

    def app_sends(self, message: Message) -> Message | None:
        """Check a message the app sends; return what to hand to the server, or None.

        Data on an open connection is counted and goes as it is. Raises
        :class:`InvalidCloseCode` / :class:`InvalidCloseReason` for a close the rules forbid
        (when not replacing it), and :class:`CloseAlreadySent` for anything after a close.
        """
        kind = message["type"]
        if kind == "websocket.send":
            if self.app_sends_data(message):
                return message
            if self.state in CLOSE_SENT_STATES:
                who = "closeguard" if self.state is State.CLOSED_BY_MIDDLEWARE else "the app"
                raise CloseAlreadySent(
                    f"cannot send {kind!r}: {who} already closed this connection with "
                    f"code {self.code}; nothing may follow a Close frame (RFC 6455 5.5.1)"
                )
            # Before accept, or with the peer gone, the server answers with its own error.
            return message
        if kind == "websocket.close":
            return self._app_closes(message)
        if kind == "websocket.http.response.start" and self.state is State.CONNECTING:
            # The app answers the handshake with its own HTTP response.
            self.state = State.REFUSED
            self.http_status = int(message.get("status", 0))
        return message

    def _app_closes(self, message: Message) -> Message | None:
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
        if code == CloseCode.INTERNAL_ERROR and reason not in ("", INTERNAL_ERROR_REASON):
            reason = self._withhold_internal_error_reason(reason)
        self.state = State.CLOSED_BY_APP
        self._ended(code, reason, "app")
        return close_message(code, reason)

    def _withhold_internal_error_reason(self, reason: str) -> str:
        """A 1011's reason is where frameworks put an exception's text (BlackSheep sends
        ``str(exc)``), and an exception's text may hold anything: a path, a query, a secret.
        The client gets closeguard's own words; the app's stay in the record, for operators."""
        if self.requested_code is None:  # else the app asked for an invalid code first
            self.requested_code = CloseCode.INTERNAL_ERROR
        self._note(f"a 1011's reason is not sent; the app's was {reason!r}")
        return INTERNAL_ERROR_REASON

    # What the server does and reports -----------------------------------------------------

    def server_delivers(self, message: Message) -> Message | CloseInstead | None:
        """What the app gets for a message the server's ``receive`` gave.

        The message itself, counted when it is data; a :class:`CloseInstead` for data the app
        must never see: over ``max_message_size`` (1009 naming the limit), or over a rate
        (:mod:`closeguard.policies`); or None to read on: data over the limit after the app's
        close, or the server's disconnect once closeguard closed (the app hears
        :attr:`app_disconnect` instead). Data the client sent before closeguard's close reached
        it is still the app's, as it would be had the app closed.
        """
        size = message_size(message)
        if size is not None:  # data: the one kind of message the app gets often
            limit = self.max_message_size
            if limit is None or size <= limit:
                if self.watch is not None:
                    broken = self.watch.heard_from_client(size)
                    if broken is not None and self.state is State.OPEN:
                        return self._close_instead(POLICY_CLOSES[broken], broken)
                self.messages_received += 1
                self.bytes_received += size
                return message
            if self.state is not State.OPEN:
                return None
            reason = f"message exceeds the limit of {limit} bytes"
            return self._close_instead(CloseCode.MESSAGE_TOO_BIG, reason, fallback=False)
        if message["type"] == "websocket.disconnect":
            self._server_disconnects(message)
            if self.app_disconnect is not None:  # closeguard closed: the app hears its close
                return None
        return message

    def _server_disconnects(self, message: Message) -> None:
        """uvicorn reports its own shutdown as 1012 (Service Restart): that end is the
        server's. A client may send 1012 too; uvicorn then passes the client's ``reason`` on
        (even an empty one), and its own 1012 has none, so a 1012 with a ``reason`` is the
        client's. Servers that pass no reason (daphne, granian) never send 1012 themselves
        either, but closeguard cannot tell them apart: there, a client's 1012 is recorded as
        the server's (docs/servers.md)."""
        if self.state is State.CONNECTING:
            # The client left before the server took an accept: no code ever applied.
            self.state = State.DISCONNECTED
            self._ended(None, "", "client")
        elif self.state is State.OPEN or self.awaits_report:
            self.state = State.DISCONNECTED
            code = message.get("code")
            code = code if isinstance(code, int) else CloseCode.NO_STATUS_RCVD
            servers = code == CloseCode.SERVICE_RESTART and "reason" not in message
            initiator: Initiator = "server" if servers else "client"
            self._ended(code, message.get("reason") or "", initiator)

    def server_accepts(self) -> None:
        """The server took the app's ``websocket.accept`` without an error."""
        if self.state is State.CONNECTING:
            self.state = State.OPEN
            self.accepted = True

    def server_loses_peer(self, unsent: Message) -> None:
        """Sending ``unsent`` raised OSError: the transport is gone (ASGI 2.4), and the message
        never reached the client, so it is not counted. How the connection ended is for the
        server to report; until it does, the code is unknown."""
        if self.state in (State.DISCONNECTED, State.TORN_DOWN):
            return
        if self.state is State.OPEN and unsent["type"] == "websocket.send":
            self.messages_sent -= 1
            self.bytes_sent -= message_size(unsent) or 0
        if self.state is State.REFUSED:
            self.http_status = None  # the refusal never reached anyone
        self.state = State.DISCONNECTED
        self._ended(None, "", "client")

    @property
    def close_sent(self) -> bool:
        """Whether a Close frame was handed to the server: nothing may follow it."""
        return self.state in CLOSE_SENT_STATES

    @property
    def awaits_report(self) -> bool:
        """Whether a send found the peer gone and the server has not yet said how it ended."""
        return self.state is State.DISCONNECTED and self.accepted and self.code is None

    def server_refuses_code(self, code: int, error: Exception) -> None:
        """The server would not send this valid close code and closes with 1011 itself,
        once the app's task ends with an exception (daphne, for all but 1000 and 3000-4999:
        the wrapper makes sure that exception reaches it), so the record says 1011."""
        if self.requested_code is None and self.initiator == "app":
            self.requested_code = code
        self._note(f"the server refused to send close code {code} ({error}); it closes with 1011")
        self._ended(CloseCode.INTERNAL_ERROR, "", "middleware")

    def server_fails_close(self, message: Message, error: Exception) -> None:
        """The server raised ``error`` (not an OSError) for a valid close: it did not go out,
        and nothing says what did."""
        code = message.get("code")
        if self.requested_code is None and self.initiator == "app" and isinstance(code, int):
            self.requested_code = code
        self._note(
            f"the server failed to send close code {code} ({qualified_name(error)}: {error})"
        )
        self._ended(None, "", self.initiator)

    def server_cancels(self) -> None:
        """The server cancelled the task while it held a close: whether any of it reached
        the wire is unknown, and the server, tearing the task down, ends the connection."""
        self.state = State.TORN_DOWN
        self._ended(None, "", "server")

    def server_refuses_code_with_fallback(self, code: int, error: Exception) -> Message:
        """The server would not send closeguard's own close ``code`` (daphne: 1001-1014); the
        same reason goes out with 1000, the one code below 3000 it sends. Returns that close."""
        self._note(f"the server refused to send close code {code} ({error}); sent 1000 instead")
        self.code = int(CloseCode.NORMAL_CLOSURE)
        return close_message(CloseCode.NORMAL_CLOSURE, self.reason)

    # What the process and closeguard itself decide -----------------------------------------

    def process_drains(self) -> CloseInstead | None:
        """The process is draining: an open connection is closed with 1012 (Service Restart,
        which every code-aware client retries), and the app hears the same. None when the
        connection is not open: it ends on its own."""
        if self.state is not State.OPEN:
            return None
        return self._close_instead(CloseCode.SERVICE_RESTART, DRAINING_REASON)

    def policy_closes(self, policy: str) -> CloseInstead | None:
        """A close policy's deadline passed (:mod:`closeguard.policies`): an open connection
        is closed with its code and its name as the reason, and the app hears the same."""
        if self.state is not State.OPEN:
            return None
        return self._close_instead(POLICY_CLOSES[policy], policy)

    def middleware_denies(self, status: int, reason: str) -> None:
        """closeguard answered the handshake with its own HTTP response (503 during a drain),
        before the app ran."""
        self.state = State.REFUSED
        self.http_status = status
        self._ended(None, reason, "middleware")

    def middleware_refuses_after_accept(self, reason: str) -> CloseInstead | None:
        """Where the server cannot answer a handshake with HTTP, closeguard accepted it and
        closes at once with 1013 (Try Again Later), before the app ran."""
        if self.state is not State.OPEN:
            return None
        return self._close_instead(CloseCode.TRY_AGAIN_LATER, reason)

    def process_exits(self) -> None:
        """The process is exiting and the app's task never ended: the server stopped without
        ending it (daphne at SIGTERM). Whatever the server did to the wire is unknown."""
        if self.state in (State.OPEN, State.CONNECTING):
            self.state = State.TORN_DOWN
            self._ended(None, "", "server")

    # How the app ended: one decision --------------------------------------------------------

    def app_ends(self, exc: BaseException | None) -> Ending:
        """The app returned (``exc`` None) or raised: what to send, and what to raise."""
        state = self.state
        if exc is None:
            if state is State.OPEN:
                return Ending(close=self._close(CloseCode.NORMAL_CLOSURE, ""))
            return Ending()
        if not isinstance(exc, Exception):
            # CancelledError, KeyboardInterrupt, SystemExit: the server (or the process) is
            # tearing the task down, and the exception goes on. An open connection still gets
            # a code clients retry (hypercorn would send 1011, daphne and granian nothing).
            if state is State.OPEN:
                restart = self._close(CloseCode.SERVICE_RESTART, SHUTDOWN_REASON, "server")
                return Ending(close=restart, reraise=True, shielded=True)
            if state is State.CONNECTING:
                self.state = State.TORN_DOWN
                self._ended(None, "", "server")
            return Ending(reraise=True)
        leaves = leaf_exceptions(exc)
        if state in ENDED_STATES and all(isinstance(e, ORDINARY_END_EXCEPTIONS) for e in leaves):
            return Ending()  # the usual end of a Starlette endpoint whose peer left
        if state is State.CLOSED_BY_MIDDLEWARE and all(
            isinstance(e, (*ORDINARY_END_EXCEPTIONS, CloseAlreadySent)) for e in leaves
        ):
            # An app that sent after closeguard closed (a drain, a 1009) before reading the
            # disconnect: it was cut off, as by a client that left, and did nothing wrong.
            return Ending()
        # A group of one is that one exception, as the traceback a reader opens would say.
        self.exception = qualified_name(leaves[0] if len(leaves) == 1 else exc)
        # Before accept no close can reach the client: the server answers (HTTP 500).
        close = (
            self._close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
            if state is State.OPEN
            else None
        )
        return Ending(close=close, reraise=self.reraise, log_traceback=not self.reraise)

    def _close(self, code: CloseCode, reason: str, initiator: Initiator = "middleware") -> Message:
        """closeguard's own close, decided: the state says so before it is handed over."""
        self.state = State.CLOSED_BY_MIDDLEWARE
        self._ended(code, reason, initiator)
        return close_message(code, reason)

    def _close_instead(self, code: CloseCode, reason: str, fallback: bool = True) -> CloseInstead:
        """closeguard closes, and the app hears the same close as a disconnect from now on."""
        close = self._close(code, reason)
        self.app_disconnect = {**close, "type": "websocket.disconnect"}
        return CloseInstead(close, self.app_disconnect, fallback)

    # The record ---------------------------------------------------------------------------

    def _note(self, note: str) -> None:
        self.violation = note if self.violation is None else f"{self.violation}; {note}"

    def _ended(self, code: int | None, reason: str, initiator: Initiator) -> None:
        self.code = None if code is None else int(code)
        self.reason = reason
        self.initiator = initiator

    def record(self, duration: float) -> CloseRecord:
        code = self.code
        if code is None and self.state is State.DISCONNECTED and self.accepted:
            # The transport failed and the server never said how: no Close frame is known.
            code = int(CloseCode.ABNORMAL_CLOSURE)
        return CloseRecord(
            connection_id=self.connection_id,
            path=self.path,
            client=format_client(self.client),
            accepted=self.accepted,
            code=code,
            reason=self.reason,
            initiator=self.initiator,
            requested_code=self.requested_code,
            violation=self.violation,
            exception=self.exception,
            http_status=self.http_status,
            duration=duration,
            messages_received=self.messages_received,
            messages_sent=self.messages_sent,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
        )
