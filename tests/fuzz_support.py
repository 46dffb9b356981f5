"""Machinery for the property, load and hostile-input tests.

Scripts: an app's and a client's behaviour as plain data, so hypothesis can generate, shrink
and print them; the load test's server app. The in-process server that plays the client scripts
is :class:`tests.fake_server.FakeServer`; the raw client that plays them on the wire is
:class:`bench.rawws.RawClient`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
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
    from closeguard import WebSocketCloseMiddleware

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
