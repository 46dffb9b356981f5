"""The server's ``receive`` and ``send`` as closeguard calls them: each call, then the
:class:`Connection` told what the server did. What one server alone does is named here, at the
boundary, so that the core stays the same for all of them."""

from __future__ import annotations

import asyncio
import math

import anyio
from starlette.types import Message, Receive, Scope, Send

from .codes import CloseCode
from .connection import CloseInstead, Connection

__all__ = ["Server"]

#: How long to wait, after a send found the peer gone, for the server to say how the
#: connection ended. Every server measured has queued that report by the time send raises.
SERVER_REPORT_WAIT = 1.0


def refuses_code(error: Exception, code: object) -> bool:
    """Whether ``error`` is daphne's refusal of a valid close code. Its WebSocket library
    (autobahn) sends only 1000 and 3000-4999, and raises for the rest, naming the code:
    "invalid close code 1001 (must be 1000 or from [3000, 4999])"."""
    return code != CloseCode.NORMAL_CLOSURE and f"close code {code}" in str(error)


class Server:
    """One connection's view of the server."""

    __slots__ = ("closing", "conn", "error", "receive", "send_to_server")

    def __init__(self, conn: Connection, receive: Receive, send: Send) -> None:
        self.conn = conn
        self.receive = receive
        self.send_to_server = send
        #: An error the server raised for a valid close, raised to it when the app is done:
        #: daphne's own error path then closes, with 1011.
        self.error: Exception | None = None
        #: A close handed over from outside the app's task (:meth:`close_soon`), which the
        #: connection's task waits for before it ends: the server may drop the connection the
        #: moment the app returns, and the record would name a close that never went out.
        #: (Also the task's one strong reference, as asyncio asks: the connection's task holds
        #: this object until then.)
        self.closing: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        """Hand over a message the app sent, as the core answered it."""
        if message["type"] == "websocket.close" and self.conn.close_sent:
            await self._close(message, raise_peer_gone=True)
            return
        try:
            await self.send_to_server(message)
        except OSError:
            self.conn.server_loses_peer(message)
            raise
        if message["type"] == "websocket.accept":
            # Only now: a server may refuse an accept (a header it cannot send), and then the
            # client gets the server's answer, not a WebSocket.
            self.conn.server_accepts()

    def close_soon(self, answer: CloseInstead) -> None:
        """Hand closeguard's own close to the server from outside the app's task (a drain, a
        policy's deadline): in a task of its own, kept until it is done."""
        closing = self.send_close(answer.close, fallback=answer.fallback)
        self.closing = asyncio.get_running_loop().create_task(closing)

    async def refuse(self, scope: Scope, reason: str, retry_after: float) -> None:
        """Turn a handshake away before the app runs (a drain, a full connection cap), so the
        client retries later or elsewhere: HTTP 503 with ``Retry-After`` where the server offers
        the ``websocket.http.response`` extension (a bare close before accept is HTTP 403, which
        the websockets client and browsers take as final), else accept and close at once with
        1013 (Try Again Later). The reason says why, in the body or the close."""
        conn = self.conn
        message = await self.receive()  # websocket.connect, or the client gone already
        if conn.server_delivers(message) is not message or message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            conn.middleware_denies(503, reason)
            seconds = str(max(1, math.ceil(retry_after))).encode()
            headers = [(b"retry-after", seconds), (b"content-type", b"text/plain; charset=utf-8")]
            await self.send(
                {"type": "websocket.http.response.start", "status": 503, "headers": headers}
            )
            await self.send(
                {"type": "websocket.http.response.body", "body": f"{reason}\n".encode()}
            )
            return
        await self.send({"type": "websocket.accept"})
        answer = conn.middleware_refuses_after_accept(reason)
        if answer is not None:
            await self.send_close(answer.close, fallback=True)

    async def send_close(self, message: Message, *, fallback: bool = False) -> None:
        """Hand over closeguard's own close. A peer already gone is no error here. With
        ``fallback``, a code the server refuses goes out as 1000 with the same reason (a
        drain's 1012 under daphne), rather than as the server's own 1011."""
        await self._close(message, raise_peer_gone=False, fallback=fallback)

    async def _close(
        self, message: Message, *, raise_peer_gone: bool, fallback: bool = False
    ) -> None:
        """A peer already gone is raised to the app only for the app's own close, as the
        server would have; any other error is the server's, kept for when the app is done."""
        try:
            await self.send_to_server(message)
        except OSError:
            self.conn.server_loses_peer(message)
            if raise_peer_gone:
                raise
        except Exception as error:
            code = message.get("code")
            if fallback and isinstance(code, int) and refuses_code(error, code):
                substitute = self.conn.server_refuses_code_with_fallback(code, error)
                await self._close(substitute, raise_peer_gone=False)
                return
            if isinstance(code, int) and refuses_code(error, code):
                self.conn.server_refuses_code(code, error)
            else:
                self.conn.server_fails_close(message, error)
            self.error = error
        except BaseException:
            self.conn.server_cancels()
            raise

    async def finish(self, close: Message | None) -> None:
        """Carry out the end the core decided, in order: a close handed over from another task
        (a drain's, a deadline's) goes out before the app's task ends, since an app that only
        sends ends the moment a send is refused; then closeguard's own ``close``, if one is
        due; then, for a peer a send found gone, the server's report of how it ended."""
        if self.closing is not None:
            await asyncio.wait([self.closing])
        if close is not None:
            await self.send_close(close)
        if self.conn.awaits_report:
            await self.read_report()

    async def read_report(self) -> None:
        """Read what the server says of the end of a connection whose peer a send found gone
        (``websocket.disconnect``): the client's close, or a lost connection."""
        with anyio.move_on_after(SERVER_REPORT_WAIT):
            while self.conn.awaits_report:
                try:
                    message = await self.receive()
                except Exception:
                    return  # a server that will not be asked again: the record says 1006
                if message["type"] == "websocket.disconnect":
                    self.conn.server_delivers(message)
