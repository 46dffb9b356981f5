"""A uvicorn server for the end-to-end benchmarks, run in its own process pinned to one core.

``python -m bench.server --variant bare|closeguard|... --ws websockets-sansio|wsproto`` binds
127.0.0.1 on an ephemeral port, prints ``PORT <n>`` and serves the echo app until killed.
The closeguard variant logs its records at INFO to ``--log-file`` (the default handler a user
would configure). ``GET /stats`` answers with the process's traced Python memory (with
``--tracemalloc``) and RSS, after a full garbage collection: the memory benchmark's probe.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import socket
import tracemalloc
from collections.abc import MutableMapping
from typing import Any

import uvicorn

from . import common


def raise_fd_limit() -> int:
    """Lift the soft file-descriptor limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def stats(send: Any) -> None:
    gc.collect()
    body = json.dumps(
        {
            "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
            "rss": rss_bytes(),
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def bench_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/stats":
        await stats(send)
        return
    await common.echo_app(scope, receive, send)


def file_handler(log_file: str) -> logging.Handler:
    """The handler a deployed service would give a logger: a file, one formatted line each."""
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    return handler


def logged_app(log_file: str | None, *, with_fields: bool = False) -> Any:
    """The bare app plus one ``logger.info`` line per WebSocket connection, of the length of
    closeguard's: what writing a line per connection costs by itself, whoever writes it.
    ``with_fields`` adds an ``extra`` entry per field of closeguard's record, as its line
    carries them for structured handlers (all None: what an entry costs a ``LogRecord`` does
    not depend on its value)."""
    from middleware.record import FIELD_NAMES

    fields = dict.fromkeys(FIELD_NAMES) if with_fields else None
    logger = logging.getLogger("bench.line")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_file:
        logger.addHandler(file_handler(log_file))

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await bench_app(scope, receive, send)
        if scope["type"] == "websocket":
            logger.info(
                "websocket %s closed: code=%s reason=%s initiator=%s%s",
                scope["path"],
                1000,
                "''",
                "client",
                " duration=0.001s received=0/0B sent=0/0B id=0123456789abcdef0123456789abcdef",
                extra=None if fields is None else dict(fields),  # one per line, as an app's
            )

    return app


VARIANTS = (
    "bare",
    "no-op wrapper",
    "reference",
    "bare+log line",
    "bare+fields line",
    "closeguard",
    "closeguard-quiet",
)


def build_app(variant: str, log_file: str | None) -> Any:
    if variant == "bare":
        return bench_app
    if variant == "no-op wrapper":
        return common.PassThrough(bench_app)
    if variant == "reference":
        return common.Reference(bench_app)
    if variant == "bare+log line":
        return logged_app(log_file)
    if variant == "bare+fields line":
        return logged_app(log_file, with_fields=True)
    from middleware import LOGGER_NAME, WebSocketCloseMiddleware

    logger = logging.getLogger(LOGGER_NAME)
    # "closeguard-quiet": the same middleware with its INFO records switched off, to tell
    # closeguard's own work from what writing a log line costs.
    logger.setLevel(logging.WARNING if variant == "closeguard-quiet" else logging.INFO)
    logger.propagate = False
    if log_file:
        logger.addHandler(file_handler(log_file))
    return WebSocketCloseMiddleware(bench_app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=None,
        help="uvicorn's bound on SIGTERM's wait for connections (default: none)",
    )
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_fd_limit()
    if args.tracemalloc:
        tracemalloc.start(1)
    app = build_app(args.variant, args.log_file)
    # IPPROTO_TCP, as uvicorn's own bind gets it from getaddrinfo: asyncio only sets
    # TCP_NODELAY on accepted sockets whose proto says TCP (else Nagle adds 40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        ws=args.ws,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
