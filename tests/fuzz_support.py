"""Machinery for the property, load and hostile-input tests.

Two pieces, each small enough to trust by reading (the in-process server that plays the
client scripts is :class:`tests.fake_server.FakeServer`):

* scripts: an app's and a client's behaviour as plain data, so hypothesis can generate,
  shrink and print them;
* :class:`RawClient`: a hand-made RFC 6455 client over asyncio streams that sends exactly the
  bytes it is told to (invalid UTF-8, any close code, an abrupt TCP drop) and keeps every
  frame the server sent, which the ``websockets`` client cannot do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

# --- Scripts ---------------------------------------------------------------------------------

#: Marks text that only the app's exception carries: it must never reach the wire.
SECRET = "SECRET-password=hunter2"

#: A close code the app leaves out of its message (the server then means 1000).
OMIT = "<omit>"


@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class SendText:
    text: str


@dataclass(frozen=True)
class SendBytes:
    size: int


@dataclass(frozen=True)
class Close:
    code: object  # any int, OMIT, or something that is not an int at all
    reason: object = ""


@dataclass(frozen=True)
class Receive_:
    pass


@dataclass(frozen=True)
class Raise:
    pass


@dataclass(frozen=True)
class Return:
    pass


@dataclass(frozen=True)
class Deny:
    status: int


AppStep = Accept | SendText | SendBytes | Close | Receive_ | Raise | Return | Deny


@dataclass(frozen=True)
class AppScript:
    steps: tuple[AppStep, ...]
    #: Catch what ``send``/``receive`` raise and go on with the next step (a raw app that
    #: recovers), instead of letting it end the app.
    persist: bool = False


@dataclass(frozen=True)
class ClientText:
    text: str


@dataclass(frozen=True)
class ClientBytes:
    size: int


@dataclass(frozen=True)
class ClientOversize:
    kind: str  # "bytes", "ascii" (too many characters) or "multibyte" (few characters, many bytes)


@dataclass(frozen=True)
class ClientClose:
    code: int | None  # None: an empty Close frame
    reason: bytes = b""  # raw: may be invalid UTF-8 or too long


@dataclass(frozen=True)
class ClientDrop:
    pass


ClientAction = ClientText | ClientBytes | ClientOversize | ClientClose | ClientDrop


@dataclass(frozen=True)
class ClientEvent:
    #: The event reaches the server just before the app's ``after``-th call to send/receive.
    after: int
    action: ClientAction


def oversize_message(kind: str, limit: int) -> dict[str, Any]:
    """A message one byte (or more) over ``limit``, in the shape ``kind`` names."""
    if kind == "bytes":
        return {"type": "websocket.receive", "bytes": b"o" * (limit + 1)}
    if kind == "ascii":
        return {"type": "websocket.receive", "text": "o" * (limit + 1)}
    # Few enough characters to pass a character count, too many bytes once encoded.
    return {"type": "websocket.receive", "text": "é" * (limit // 2 + 1)}


class AppError(Exception):
    """The app's own failure; its message holds a secret that must never reach the wire."""


async def run_script(script: AppScript, receive: Receive, send: Send) -> list[BaseException]:
    """Play ``script`` as a raw ASGI app; return what it caught (in ``persist`` mode)."""
    caught: list[BaseException] = []
    for step in script.steps:
        try:
            if isinstance(step, Return):
                return caught
            if isinstance(step, Raise):
                raise AppError(f"app failed: {SECRET}")
            await _play(step, receive, send)
        except AppError:
            raise
        except Exception as exc:
            if not script.persist:
                raise
            caught.append(exc)
    return caught


async def _play(step: AppStep, receive: Receive, send: Send) -> None:
    if isinstance(step, Accept):
        await send({"type": "websocket.accept"})
    elif isinstance(step, SendText):
        await send({"type": "websocket.send", "text": step.text})
    elif isinstance(step, SendBytes):
        await send({"type": "websocket.send", "bytes": b"b" * step.size})
    elif isinstance(step, Close):
        message: dict[str, Any] = {"type": "websocket.close", "reason": step.reason}
        if step.code != OMIT:
            message["code"] = step.code
        await send(message)
    elif isinstance(step, Receive_):
        await receive()
    elif isinstance(step, Deny):
        await send({"type": "websocket.http.response.start", "status": step.status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})


# --- The raw client --------------------------------------------------------------------------

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


@dataclass
class Wire:
    """Everything one connection's server put on the wire, as the raw client read it."""

    status: int | None = None
    frames: list[Frame] = field(default_factory=list)
    eof: bool = False  # the server closed TCP (as opposed to the read timing out)

    @property
    def closes(self) -> list[Frame]:
        return [frame for frame in self.frames if frame.opcode == OP_CLOSE]

    @property
    def close(self) -> tuple[int | None, str] | None:
        closes = self.closes
        if not closes:
            return None
        return closes[0].close_code, closes[0].close_reason.decode("utf-8", "replace")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


class RawClient:
    """One WebSocket connection made by hand: exact bytes out, every frame in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.wire = Wire()

    @classmethod
    async def connect(cls, port: int, path: str, timeout: float = 5.0) -> RawClient:
        """Open TCP and do the handshake; ``path`` goes on the request line exactly as given."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=2**26), timeout
        )
        client = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode("ascii")
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        client.wire.status = int(head.split(b" ", 2)[1])
        return client

    @property
    def opened(self) -> bool:
        return self.wire.status == 101

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 2**16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.writer.write(header + mask + _mask(payload, mask))
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send_frame(OP_TEXT, text.encode("utf-8"))

    async def send_bytes(self, data: bytes) -> None:
        await self.send_frame(OP_BINARY, data)

    async def send_close(self, code: int | None, reason: bytes = b"") -> None:
        await self.send_frame(OP_CLOSE, close_payload(code, reason))

    async def read_frame(self) -> Frame | None:
        """The next frame the server sent, or None when it closed TCP."""
        try:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.wire.eof = True
            return None
        frame = Frame(head[0] & 0x0F, payload)
        self.wire.frames.append(frame)
        return frame

    async def read_to_end(self, timeout: float = 5.0, *, answer_close: bool = True) -> Wire:
        """Read until the server closes TCP (answering its Close, as a client must), or time out."""
        answered = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                frame = await asyncio.wait_for(self.read_frame(), left)
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                break
            if frame is None:
                break
            if frame.opcode == OP_CLOSE and answer_close and not answered:
                answered = True
                with contextlib.suppress(ConnectionError):
                    await self.send_close(frame.close_code, frame.close_reason)
        self.abort()
        return self.wire

    def abort(self, *, reset: bool = False) -> None:
        """Drop TCP without a Close frame; ``reset`` sends an RST instead of a FIN."""
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def _mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    # XOR as one big integer: fast enough for 16 MiB without numpy.
    size = len(payload)
    repeated = (mask * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(size, "big")


async def gather_bounded(coros: list[Awaitable[Any]], timeout: float) -> list[Any]:
    """Run ``coros`` together; fail the test if they take longer than ``timeout`` seconds."""
    return await asyncio.wait_for(asyncio.gather(*coros), timeout)


# --- The load-test server app (run by ``uvicorn tests.fuzz_support:load_app``) ----------------

#: closeguard's limit in the load test: small, so oversized messages cost little to send.
LOAD_LIMIT = 65_536
LOAD_SCENARIOS = ("normal", "exception", "invalid", "oversize", "client_close", "drop", "return")

_load_records: list[tuple[str, int | None, str, str, str | None, int | None]] = []


def _collect(record: Any) -> None:
    _load_records.append(
        (
            record.path,
            record.code,
            record.reason,
            record.initiator,
            record.exception,
            record.requested_code,
        )
    )


def _proc_status() -> dict[str, int]:
    """The server's resident set size now and at its peak (VmRSS, VmHWM), in KiB."""
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


async def _load_ws(scope: Scope, receive: Receive, send: Send) -> None:
    scenario = scope["path"].split("/")[2]
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if scenario in ("oversize", "client_close", "drop"):
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    message = await receive()
    if message["type"] == "websocket.disconnect":
        return
    if scenario == "normal":
        await send({"type": "websocket.send", "text": message.get("text") or ""})
        await send({"type": "websocket.close", "code": 1000, "reason": "done"})
    elif scenario == "exception":
        raise RuntimeError(f"failed on {message.get('text')!r}: {SECRET}")
    elif scenario == "invalid":
        await send({"type": "websocket.close", "code": 1005, "reason": "no"})


async def _load_http(scope: Scope, receive: Receive, send: Send) -> None:
    import gc
    import json

    if scope["query_string"] == b"gc=1":
        gc.collect()
    body = json.dumps(
        {
            # This request's own task is one of them.
            "tasks": len(asyncio.all_tasks()),
            "records": _load_records,
            **_proc_status(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _quiet_logger() -> logging.Logger:
    logger = logging.Logger("closeguard-load")
    logger.addHandler(logging.NullHandler())
    return logger


def _build_load_app() -> Any:
    from middleware import WebSocketCloseMiddleware

    guarded = WebSocketCloseMiddleware(
        _load_ws,
        max_message_size=LOAD_LIMIT,
        on_close=_collect,
        # The load test's own records; the log would only add I/O to the measurement.
        logger=_quiet_logger(),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _load_http(scope, receive, send)
        elif scope["type"] == "websocket":
            await guarded(scope, receive, send)

    return app


load_app = _build_load_app()
