"""A WebSocket client made by hand (RFC 6455): exact bytes out, every frame in.

The one raw client of the repository, for what a client library cannot do or costs too much
for: the hostile-input, property and load tests send invalid UTF-8, any close code or an
abrupt TCP drop and keep every frame the server sent; the shutdown tests open connections that
never read; the churn benchmark needs a handshake cheaper than the server's. A client's frames
are masked (5.3); the server's are read unmasked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def handshake(path: str, host: str = "127.0.0.1", headers: str = "") -> bytes:
    """The opening handshake's request (4.1), ``path`` on the request line exactly as given."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode("ascii")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (5.2), masked with a fresh key."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + _mask(payload, mask)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def _mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    # XOR as one big integer: fast enough for 16 MiB without numpy.
    size = len(payload)
    repeated = (mask * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(size, "big")


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


class RawClient:
    """One WebSocket connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.wire = Wire()

    @classmethod
    async def connect(cls, port: int, path: str, timeout: float | None = 5.0) -> RawClient:
        """Open TCP to 127.0.0.1 and do the handshake (``timeout`` None: the caller bounds it)."""
        opening = asyncio.open_connection("127.0.0.1", port, limit=2**26)
        reader, writer = await asyncio.wait_for(opening, timeout) if timeout else await opening
        client = cls(reader, writer)
        writer.write(handshake(path, f"127.0.0.1:{port}"))
        reading = reader.readuntil(b"\r\n\r\n")
        head = await asyncio.wait_for(reading, timeout) if timeout else await reading
        client.wire.status = int(head.split(b" ", 2)[1])
        return client

    @property
    def opened(self) -> bool:
        return self.wire.status == 101

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        self.writer.write(client_frame(opcode, payload))
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


def blocking_handshake(port: int, path: str, headers: str = "") -> socket.socket:
    """Open a WebSocket on a plain socket with a small receive buffer, and read nothing: the
    server's sends pile up, then wait (the response is the caller's to read, or not)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(handshake(path, headers=headers))
    return sock
