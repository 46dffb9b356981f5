"""deploy/nginx/closeguard.conf, run: nginx in front of two uvicorn instances of the service.

nginx runs in the foreground as an ordinary child process with a main config written here (pid,
logs and temporary folders in the test's folder) that includes the shipped file, changed only
where a test must: the listen address and port, the two upstream ports, and in the idle test
the read timeout. Every process listens on 127.0.0.1 at a free port. The tests need Debian's
nginx (.ci/setup.d/30-nginx.sh): without it they skip, except in CI, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bench.harness import free_port, running
from tests.app_support import BIN_DIR, AppProcess, app_env, run_app
from tests.conftest import talk

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "closeguard.conf"
#: closeguard's default limit, which the service keeps unless CLOSEGUARD_MAX_MESSAGE_SIZE says.
DEFAULT_LIMIT = 1_048_576
FORGED = "203.0.113.7"


def nginx_binary() -> str:
    """Debian's nginx; missing is a failure in CI (``CI`` set) and a skip elsewhere."""
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        message = "nginx is not installed (.ci/setup.d/30-nginx.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def substitute(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced: a template that changed shape fails loudly."""
    assert text.count(old) == 1, f"{TEMPLATE.name} should hold {old!r} exactly once"
    return text.replace(old, new)


def site_config(
    port: int, upstreams: tuple[int, int], read_timeout: str | None, forwarded_for: str | None
) -> str:
    text = TEMPLATE.read_text()
    text = substitute(text, "listen 8000;", f"listen 127.0.0.1:{port};")
    text = substitute(text, "server 127.0.0.1:8001 ", f"server 127.0.0.1:{upstreams[0]} ")
    text = substitute(text, "server 127.0.0.1:8002 ", f"server 127.0.0.1:{upstreams[1]} ")
    if read_timeout is not None:
        text = substitute(text, "proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};")
    if forwarded_for is not None:
        text = substitute(
            text,
            "proxy_set_header X-Forwarded-For $remote_addr;",
            f"proxy_set_header X-Forwarded-For {forwarded_for};",
        )
    return text


def main_config(folder: Path) -> str:
    """What /etc/nginx/nginx.conf would say, with every path in ``folder``."""
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        "events {\n    worker_connections 256;\n}\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n"
        f"    include {folder / 'closeguard.conf'};\n}}\n"
    )


@dataclass
class Proxied:
    """nginx and its two upstream services."""

    port: int
    upstreams: list[AppProcess]
    error_log: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def records(self, path: str) -> list[dict[str, Any]]:
        """closeguard's records for ``path`` in both upstreams' logs."""
        return [record for upstream in self.upstreams for record in upstream.close_records(path)]


def upstream_command(port: int, *options: str) -> list[str]:
    """The upstream command deploy/nginx/closeguard.conf's comment gives, at ``port``."""
    return [
        os.path.join(BIN_DIR, "uvicorn"), "app.main:app", "--host", "127.0.0.1",
        "--port", str(port), "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1",
        "--timeout-graceful-shutdown", "5", *options,
    ]  # fmt: skip


@contextmanager
def proxied(
    tmp_path: Path,
    *upstream_options: str,
    read_timeout: str | None = None,
    forwarded_for: str | None = None,
) -> Iterator[Proxied]:
    """Two upstream services, then nginx in front of them; all stopped at the end."""
    nginx = nginx_binary()
    folder = tmp_path / "nginx"
    folder.mkdir()
    ports = (free_port(), free_port())
    with ExitStack() as stack:
        upstreams = [
            stack.enter_context(
                run_app(
                    upstream_command(port, *upstream_options),
                    port,
                    tmp_path / f"upstream-{index}.log",
                    app_env(),
                )
            )
            for index, port in enumerate(ports)
        ]
        port = free_port()
        (folder / "closeguard.conf").write_text(
            site_config(port, ports, read_timeout, forwarded_for)
        )
        (folder / "nginx.conf").write_text(main_config(folder))
        error_log = folder / "error.log"
        command = [
            nginx, "-p", f"{folder}/", "-c", str(folder / "nginx.conf"), "-e", str(error_log),
        ]  # fmt: skip
        stack.enter_context(
            running(command, port, output=folder / "output.log", what="nginx", grace=10)
        )
        yield Proxied(port, upstreams, error_log)


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def closed_with(client: ClientConnection, timeout: float) -> tuple[int, str] | None:
    """The Close frame an idle client receives (None: the connection ended without one)."""
    try:
        message = await asyncio.wait_for(client.recv(), timeout)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else (closed.rcvd.code, closed.rcvd.reason)
    raise AssertionError(f"an idle client received a message: {message!r}")


async def echo(client: ClientConnection, text: str) -> None:
    await client.send(text)
    assert await asyncio.wait_for(client.recv(), 10) == text


async def test_close_codes_and_reasons_pass_through_unchanged(tmp_path: Path) -> None:
    with proxied(tmp_path) as proxy:
        closes = {
            "bye": await talk(f"{proxy.ws}/ws/close?code=1000&reason=bye"),
            "app": await talk(f"{proxy.ws}/ws/close?code=4000&reason=room%20closed%20%C3%A9"),
            "raise": await talk(f"{proxy.ws}/ws/raise"),
            "big": await talk(f"{proxy.ws}/ws/echo", ("x" * (DEFAULT_LIMIT + 1),)),
        }
        refused = await talk(f"{proxy.ws}/ws/refuse")
        await until(lambda: len(proxy.records("/ws/echo")) == 1, what="the 1009 record")
        big = proxy.records("/ws/echo")
    assert {name: seen.close for name, seen in closes.items()} == {
        "bye": (1000, "bye"),
        "app": (4000, "room closed é"),
        "raise": (1011, "internal error"),
        "big": (1009, f"message exceeds the limit of {DEFAULT_LIMIT} bytes"),
    }
    assert refused.status == 403
    assert [(r["code"], r["reason"], r["initiator"]) for r in big] == [
        (1009, f"message exceeds the limit of {DEFAULT_LIMIT} bytes", "middleware")
    ]


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # The shipped config: nginx's own view of the client, whatever the client claims.
        (None, "127.0.0.1"),
        # Appending ($proxy_add_x_forwarded_for) would let a client choose its own address.
        ("$proxy_add_x_forwarded_for", FORGED),
    ],
    ids=["shipped", "appending"],
)
async def test_the_record_names_the_client_nginx_saw(
    tmp_path: Path, forwarded_for: str | None, client: str
) -> None:
    with proxied(tmp_path, forwarded_for=forwarded_for) as proxy:
        async with connect(
            f"{proxy.ws}/ws/echo", additional_headers={"X-Forwarded-For": FORGED}
        ) as ws:
            await echo(ws, "who am I")
        await until(lambda: len(proxy.records("/ws/echo")) == 1, what="the record")
        found = proxy.records("/ws/echo")
    # The host alone: uvicorn gives a forwarded client port 0, which the record leaves out
    # (a client that reached uvicorn directly would be 127.0.0.1:<port>).
    assert [(r["client"], r["code"], r["initiator"]) for r in found] == [(client, 1000, "client")]


async def test_a_rolling_restart_is_1012_then_a_reconnect_to_the_other(tmp_path: Path) -> None:
    with proxied(tmp_path) as proxy:
        first, second = proxy.upstreams
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(connect(f"{proxy.ws}/ws/echo", ping_interval=None))
                for _ in range(4)
            ]
            for index, client in enumerate(clients):
                await echo(client, f"hello {index}")

            first.process.send_signal(signal.SIGTERM)  # what a rolling update does to one
            # uvicorn ends by the signal it was sent, raised again after its graceful shutdown.
            assert await asyncio.to_thread(first.process.wait, 20) == -signal.SIGTERM
            # The first instance has ended its connections (one record each) and exited.
            restarted = len(first.close_records("/ws/echo"))
            await until(lambda: sum(c.state is not State.OPEN for c in clients) == restarted)
            gone = [client for client in clients if client.state is not State.OPEN]
            kept = [client for client in clients if client.state is State.OPEN]
            assert gone, "nginx should have spread four connections over both instances"
            assert kept, "nginx should have spread four connections over both instances"

            ends = await asyncio.gather(*(closed_with(client, 10) for client in gone))
            assert ends == [(1012, "")] * len(gone)
            for client in kept:
                await echo(client, "still here")
            # Each restarted client reconnects, through nginx, to the instance still running.
            for index in range(len(gone)):
                async with connect(f"{proxy.ws}/ws/echo", ping_interval=None) as again:
                    await echo(again, f"back {index}")
            await until(lambda: len(second.close_records("/ws/echo")) == len(gone), what="records")
            reconnected = second.close_records("/ws/echo")
        stopped = first.close_records("/ws/echo")
    assert [(r["code"], r["initiator"]) for r in stopped] == [(1012, "server")] * len(gone)
    assert [(r["code"], r["initiator"]) for r in reconnected] == [(1000, "client")] * len(gone)


@pytest.mark.parametrize(
    ("ping_interval", "stays_up"),
    [("0", False), ("0.5", True)],
    ids=["no-pings", "pings-under-the-timeout"],
)
async def test_idle_connections_need_pings_under_the_proxy_read_timeout(
    tmp_path: Path, ping_interval: str, stays_up: bool
) -> None:
    """nginx cuts an upgraded connection with nothing read from upstream for its read timeout."""
    options = ("--ws-ping-interval", ping_interval, "--ws-ping-timeout", "5")
    with proxied(tmp_path, *options, read_timeout="2s") as proxy:
        # The client never pings: only the server's pings can keep the connection up.
        async with connect(f"{proxy.ws}/ws/echo", ping_interval=None) as client:
            await echo(client, "hello")
            started = time.monotonic()
            try:
                end: tuple[int, str] | str | None = await closed_with(client, 6.0)
            except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                end = "still open"
            waited = time.monotonic() - started
            if stays_up:
                await echo(client, "still here")
        await until(lambda: len(proxy.records("/ws/echo")) == 1, what="the record")
        found = proxy.records("/ws/echo")
        nginx_said = proxy.error_log.read_text()
    if stays_up:
        assert end == "still open"
        assert [(r["code"], r["initiator"]) for r in found] == [(1000, "client")]
    else:
        assert end is None  # no Close frame: a browser reports 1006
        assert 1.5 < waited < 5.0
        assert "upstream timed out" in nginx_said
        # uvicorn tells the app 1005 for a connection lost without a Close frame, and the
        # record says what the server said (docs/deployment.md).
        assert [(r["code"], r["initiator"]) for r in found] == [(1005, "client")]
