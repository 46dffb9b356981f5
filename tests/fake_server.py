"""One WebSocket connection as a conforming ASGI server handles it, in process, without I/O.

The one fake server of the suite: the ASGI-boundary tests (test_asgi.py) and the property
tests (test_properties.py) both run closeguard against it. It follows ASGI spec 2.4 as
uvicorn does: it keeps every frame it would put on the wire, refuses what a server must
refuse, and plays the client from a script (:mod:`tests.fuzz_support`'s client actions), so a
test says what the client does, not which ASGI messages a server would make of it.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.types import Message, Scope, Send

from closeguard import MAX_REASON_BYTES, classify
from tests.fuzz_support import (
    ClientAction,
    ClientBytes,
    ClientClose,
    ClientDrop,
    ClientEvent,
    ClientOversize,
    ClientText,
    oversize_message,
)

#: When a bare client action (one not wrapped in a :class:`ClientEvent`) arrives: only once
#: the app asks for a message and there is nothing else to deliver.
WHEN_ASKED = sys.maxsize


class ClientGone(OSError):
    """What a server raises from ``send`` once the peer is gone (ASGI spec 2.4)."""


class ServerRefused(RuntimeError):
    """What a server raises for a message it must not act on (uvicorn raises RuntimeError)."""


@dataclass(frozen=True)
class WireFrame:
    kind: str  # "accept", "http", "text", "bytes", "close"
    origin: str  # "app": the app's own message object; "middleware": one closeguard made;
    # "server": the server's own frame (its echo of a client's close, or a protocol failure)
    code: int | None = None
    reason: str = ""
    data: str | bytes | None = None  # a text or bytes frame's payload
    status: int | None = None


@dataclass
class Refusal:
    message_type: str
    origin: str
    phase: str


@dataclass
class FakeServer:
    """One WebSocket connection as a conforming server handles it, without any I/O.

    Client events arrive between the app's calls, as a network would deliver them; a bare
    client action arrives when the app asks for a message. Nothing blocks by default: a
    receive with nothing to deliver means the client acts next, or, with nothing left to do,
    drops the connection (as a real client times out). With ``idle="wait"`` the client stays
    quietly connected instead, and such a receive waits until the task is cancelled.
    """

    client: Sequence[ClientEvent | ClientAction] = ()
    #: The limit an oversized client message (:class:`ClientOversize`) is over.
    limit: int = 1_048_576
    #: What uvicorn reports for a TCP drop: 1006 (legacy websockets) or 1005 (the others).
    drop_code: int = 1006
    idle: Literal["drop", "wait"] = "drop"
    phase: str = "handshake"  # handshake, open, close_sent, refused, peer_gone
    wire: list[WireFrame] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    #: Disconnect codes the server reported to the app (any of them may end the record).
    reported: list[int] = field(default_factory=list)
    peer_left: bool = False
    calls: int = 0
    #: The app's own message objects, kept alive so that identity tells them apart.
    app_messages: list[Message] = field(default_factory=list)
    inbox: deque[dict[str, Any]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        events = [
            event if isinstance(event, ClientEvent) else ClientEvent(WHEN_ASKED, event)
            for event in self.client
        ]
        self.pending = deque(sorted(events, key=lambda event: event.after))
        self.inbox.append({"type": "websocket.connect"})

    @property
    def closes(self) -> list[tuple[int | None, str]]:
        """The Close frames that came through closeguard (not the server's own echo)."""
        return [
            (frame.code, frame.reason)
            for frame in self.wire
            if frame.kind == "close" and frame.origin != "server"
        ]

    @property
    def unread(self) -> list[ClientAction]:
        """What the client did that never reached the app's side."""
        return [event.action for event in self.pending]

    # The client's side

    def _tick(self) -> None:
        self.calls += 1
        while self.pending and self.pending[0].after <= self.calls:
            action = self.pending[0].action
            if self.phase == "handshake" and not isinstance(action, ClientDrop):
                return  # no frame can come before the handshake completes
            self.pending.popleft()
            self._arrive(action)

    def _disconnect(self, code: int, reason: str = "") -> None:
        self.reported.append(code)
        self.inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _arrive(self, action: ClientAction) -> None:
        if isinstance(action, ClientDrop):
            self.peer_left = True
            if self.phase in ("handshake", "open"):
                self.phase = "peer_gone"
                self._disconnect(self.drop_code)
            return
        if self.phase != "open":
            return  # after the server's close, data is discarded and a close ends the handshake
        if isinstance(action, ClientText):
            self.inbox.append({"type": "websocket.receive", "text": action.text})
        elif isinstance(action, ClientBytes):
            self.inbox.append({"type": "websocket.receive", "bytes": b"c" * action.size})
        elif isinstance(action, ClientOversize):
            self.inbox.append(oversize_message(action.kind, self.limit))
        elif isinstance(action, ClientClose):
            self.peer_left = True
            self.phase = "peer_gone"
            self._client_close(action)

    def _client_close(self, action: ClientClose) -> None:
        if action.code is None:
            self.wire.append(WireFrame("close", "server", None, ""))
            self._disconnect(1005)
            return
        if not classify(action.code).may_be_sent or len(action.reason) > MAX_REASON_BYTES:
            self.wire.append(WireFrame("close", "server", 1002, ""))
            self._disconnect(1002)
            return
        try:
            reason = action.reason.decode("utf-8")
        except UnicodeDecodeError:
            self.wire.append(WireFrame("close", "server", 1007, ""))
            self._disconnect(1007)
            return
        self.wire.append(WireFrame("close", "server", action.code, reason))
        self._disconnect(action.code, reason)

    # The app's side (through closeguard)

    async def receive(self) -> Message:
        self._tick()
        for _ in range(len(self.pending) + 2):
            if self.inbox:
                return self.inbox.popleft()
            if self.phase == "handshake" or not self.pending:
                if self.idle == "wait" and self.phase in ("handshake", "open"):
                    await asyncio.get_running_loop().create_future()  # until cancelled
                self._arrive(ClientDrop())
            else:
                self._arrive(self.pending.popleft().action)
            if not self.inbox:
                # Over already, and the one disconnect was delivered: a server that does not
                # hang reports the end again.
                self._disconnect(self.drop_code)
        raise AssertionError("unreachable: every pass adds to the inbox or consumes an event")

    async def send(self, message: Message) -> None:
        self._tick()
        origin = "app" if any(message is mine for mine in self.app_messages) else "middleware"
        kind = message["type"]
        if self.phase == "peer_gone":
            raise ClientGone("the client is gone")
        if self.phase == "handshake":
            if kind == "websocket.accept":
                self.phase = "open"
                self.wire.append(WireFrame("accept", origin))
                return
            if kind == "websocket.close":
                self._refuse_handshake(403, origin)
                return
            if kind == "websocket.http.response.start":
                self._refuse_handshake(int(message["status"]), origin)
                return
        elif self.phase == "open":
            if kind == "websocket.send":
                text = message.get("text")
                if text is not None:
                    self.wire.append(WireFrame("text", origin, data=text))
                else:
                    self.wire.append(WireFrame("bytes", origin, data=message["bytes"]))
                return
            if kind == "websocket.close":
                code = message.get("code", 1000)
                reason = message.get("reason") or ""
                self.wire.append(WireFrame("close", origin, code, reason))
                self.phase = "close_sent"
                # uvicorn tells the app its own close as the disconnect it will receive.
                self._disconnect(code, reason)
                return
        elif self.phase == "refused" and kind == "websocket.http.response.body":
            return
        self.refusals.append(Refusal(kind, origin, self.phase))
        raise ServerRefused(f"unexpected {kind!r} in phase {self.phase}")

    def _refuse_handshake(self, status: int, origin: str) -> None:
        self.phase = "refused"
        self.wire.append(WireFrame("http", origin, status=status))
        self.inbox.append({"type": "websocket.disconnect", "code": 1006})

    def app_send(self, send: Send) -> Send:
        """Wrap the app's ``send`` so the server can tell the app's messages from closeguard's."""

        async def tagged(message: Message) -> None:
            self.app_messages.append(message)
            await send(message)

        return tagged


#: Seconds a connection against the fake server may take: it never waits on the fake server,
#: so anything near this is a connection blocked on something else.
BLOCKED_AFTER = 5.0


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one connection against the fake server to its end, in an event loop of its own
    (closeguard's timeouts need one); it must end at once, as the fake server never blocks."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, BLOCKED_AFTER)

    try:
        return asyncio.run(bounded())
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        raise AssertionError(
            "the connection blocked on something other than the fake server"
        ) from None


def websocket_scope(path: str = "/ws", query_string: bytes = b"") -> Scope:
    """The scope a server hands the app for a WebSocket request to ``path``."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }
