"""closeguard.prometheus: the metrics text after real connections, in one process and in several."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from bench.harness import ROOT, free_port
from closeguard import WebSocketCloseMiddleware
from closeguard.prometheus import OpenConnectionsMiddleware, PrometheusCloseMetrics, exposition
from tests.app_support import (
    BIN_DIR,
    app_env,
    end_by_a_policy_and_by_its_words,
    http_get,
    run_app,
)
from tests.conftest import serve, talk


def metrics_app(registry: CollectorRegistry) -> Starlette:
    metrics = PrometheusCloseMetrics(registry=registry)

    async def close(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "bye")

    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("boom")

    async def refuse(websocket: WebSocket) -> None:
        await websocket.close()

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    return Starlette(
        routes=[
            WebSocketRoute("/close", close),
            WebSocketRoute("/boom", boom),
            WebSocketRoute("/refuse", refuse),
            WebSocketRoute("/hold", hold),
        ],
        middleware=[
            Middleware(OpenConnectionsMiddleware, metrics=metrics),
            Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
        ],
    )


def lines(registry: CollectorRegistry) -> list[str]:
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain; version=")
    return body.decode().splitlines()


async def wait_for_line(registry: CollectorRegistry, line: str) -> list[str]:
    """The exposition once it holds ``line``: the server finishes a moment after the client."""
    for _ in range(100):
        text = lines(registry)
        if line in text:
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{line!r} never appeared in:\n" + "\n".join(lines(registry)))


async def test_closes_durations_and_open_connections_after_real_connections() -> None:
    registry = CollectorRegistry()
    with serve(metrics_app(registry), "websockets-sansio") as url:
        assert (await talk(f"{url}/close")).close == (4000, "bye")
        assert (await talk(f"{url}/close")).close == (4000, "bye")
        assert (await talk(f"{url}/boom")).close == (1011, "internal error")
        assert (await talk(f"{url}/refuse")).status == 403
        async with connect(f"{url}/hold") as first, connect(f"{url}/hold") as second:
            await wait_for_line(registry, "closeguard_websocket_open_connections 2.0")
            await first.close(4321, "client leaves")
            await wait_for_line(registry, "closeguard_websocket_open_connections 1.0")
            await second.close(1000)
        text = await wait_for_line(registry, "closeguard_websocket_open_connections 0.0")

    assert (
        'closeguard_websocket_closes_total{code="4000",initiator="app",policy="none"} 2.0' in text
    )
    assert (
        'closeguard_websocket_closes_total{code="1011",initiator="middleware",policy="none"} 1.0'
        in text
    )
    assert (
        'closeguard_websocket_closes_total{code="none",initiator="app",policy="none"} 1.0' in text
    )
    assert (
        'closeguard_websocket_closes_total{code="4321",initiator="client",policy="none"} 1.0'
        in text
    )
    assert (
        'closeguard_websocket_closes_total{code="1000",initiator="client",policy="none"} 1.0'
        in text
    )
    assert "closeguard_websocket_connection_duration_seconds_count 6.0" in text
    assert 'closeguard_websocket_connection_duration_seconds_bucket{le="+Inf"} 6.0' in text
    assert "# TYPE closeguard_websocket_open_connections gauge" in text


async def test_closes_are_split_by_the_policy_that_ended_them_and_by_nothing_else() -> None:
    """A policy's close is counted under its name; the same words as an app's or a client's
    reason are not a policy, so the label never carries text closeguard did not write."""
    registry = CollectorRegistry()
    metrics = PrometheusCloseMetrics(registry=registry)
    await end_by_a_policy_and_by_its_words(metrics.on_close)
    text = lines(registry)
    closes = sorted(line for line in text if line.startswith("closeguard_websocket_closes_total"))
    assert closes == [
        'closeguard_websocket_closes_total{code="1001",initiator="client",policy="none"} 1.0',
        'closeguard_websocket_closes_total{code="1001",initiator="middleware",'
        'policy="idle_timeout"} 1.0',
        'closeguard_websocket_closes_total{code="1008",initiator="middleware",'
        'policy="first_message_timeout"} 1.0',
        'closeguard_websocket_closes_total{code="4000",initiator="app",policy="none"} 1.0',
    ]


def test_metrics_can_be_created_unregistered_and_renamed() -> None:
    metrics = PrometheusCloseMetrics(registry=None, namespace="chat")
    registry = CollectorRegistry()
    registry.register(metrics.closes)
    assert "# TYPE chat_websocket_closes_total counter" in lines(registry)


# Several processes: uvicorn --workers N with PROMETHEUS_MULTIPROC_DIR -----------------------


async def test_workers_share_their_metrics_through_the_multiprocess_directory(
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    command = [
        *(os.path.join(BIN_DIR, "uvicorn"), "app.main:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
    ]
    env = app_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with run_app(command, port, tmp_path / "out.log", env) as service:
        # Both workers have imported the app (each writes its own histogram file) ...
        deadline = time.monotonic() + 20
        while len(list(metrics_dir.glob("histogram_*.db"))) < 2:
            assert time.monotonic() < deadline, "two workers did not start within 20 s"
            await asyncio.sleep(0.05)
        # ... then connections go to whichever worker the kernel picks.
        for _ in range(8):
            seen = await talk(f"ws://127.0.0.1:{port}/ws/close?code=4000&reason=w")
            assert seen.close == (4000, "w")
        counted = 'closeguard_websocket_closes_total{code="4000",initiator="app",policy="none"} 8.0'
        # Six connections held open at once: the live gauge is summed over the workers.
        async with AsyncExitStack() as stack:
            opening = [connect(f"ws://127.0.0.1:{port}/ws/echo") for _ in range(6)]
            sockets = await asyncio.gather(*map(stack.enter_async_context, opening))
            for ws in sockets:
                await ws.send("ping")
            assert [await ws.recv() for ws in sockets] == ["ping"] * 6
            # Every scrape, whichever worker answers it, sees every worker's values.
            for _ in range(6):
                text = http_get(f"{service.http}/metrics")[2].splitlines()
                assert counted in text
                assert "closeguard_websocket_open_connections 6.0" in text
                assert "closeguard_websocket_connection_duration_seconds_count 8.0" in text
        pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}
        assert len(pids) >= 2


def test_the_values_of_several_processes_are_summed(tmp_path: Path) -> None:
    """What a scrape of any worker reports: every worker's closes, each written to its own file."""
    child = (
        "import sys\n"
        "from closeguard import CloseRecord\n"
        "from closeguard.prometheus import PrometheusCloseMetrics\n"
        "metrics = PrometheusCloseMetrics()\n"
        "record = CloseRecord('id', '/ws', None, True, int(sys.argv[1]), '', 'app', None, None,\n"
        "                     None, None, 0.25, 0, 0, 0, 0)\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    metrics.on_close(record)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for code, count in (("4000", "3"), ("4000", "2"), ("1000", "1")):
        command = [sys.executable, "-c", child, code, count]
        subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=30)
    assert len(list(tmp_path.glob("counter_*.db"))) == 3

    text = exposition(multiprocess_dir=str(tmp_path))[0].decode().splitlines()

    assert (
        'closeguard_websocket_closes_total{code="4000",initiator="app",policy="none"} 5.0' in text
    )
    assert (
        'closeguard_websocket_closes_total{code="1000",initiator="app",policy="none"} 1.0' in text
    )
    assert "closeguard_websocket_connection_duration_seconds_count 6.0" in text
    assert "closeguard_websocket_connection_duration_seconds_sum 1.5" in text


def test_a_killed_workers_open_connections_are_forgotten(tmp_path: Path) -> None:
    """A worker that dies with connections open must not hold the live gauge up forever."""
    child = (
        "from closeguard.prometheus import PrometheusCloseMetrics\n"
        "metrics = PrometheusCloseMetrics()\n"
        "metrics.open.inc(); metrics.open.inc()\n"
        "import os; os._exit(0)  # killed: nothing is decremented\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", child], env=env, cwd=ROOT, check=True, timeout=30)
    assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 1

    stale = CollectorRegistry()
    multiprocess.MultiProcessCollector(stale, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert "closeguard_websocket_open_connections 2.0" in lines(stale)  # what a scrape would say

    text = exposition(multiprocess_dir=str(tmp_path))[0].decode().splitlines()

    assert not [line for line in text if line.startswith("closeguard_websocket_open_connections")]
    assert list(tmp_path.glob("gauge_livesum_*.db")) == []


def test_a_killed_worker_not_yet_reaped_is_forgotten(tmp_path: Path) -> None:
    """Between a worker's death and its master's wait, the pid is a zombie: still dead."""
    child = (
        "from closeguard.prometheus import PrometheusCloseMetrics\n"
        "PrometheusCloseMetrics().open.inc()\n"
        "import os; os._exit(0)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    zombie = subprocess.Popen([sys.executable, "-c", child], env=env, cwd=ROOT)
    try:
        stat = Path(f"/proc/{zombie.pid}/stat")
        for _ in range(300):  # not waited for: it stays a zombie once it has exited
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the child never exited")
        assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 1

        text = exposition(multiprocess_dir=str(tmp_path))[0].decode().splitlines()

        assert not [line for line in text if line.startswith("closeguard_websocket_open_")]
        assert list(tmp_path.glob("gauge_livesum_*.db")) == []
    finally:
        zombie.wait(timeout=30)


@pytest.mark.parametrize("module", ["closeguard", "closeguard.codes", "closeguard.asgi"])
def test_the_core_never_imports_prometheus_client(module: str) -> None:
    code = f"import sys, {module}; assert 'prometheus_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


# A drain under way --------------------------------------------------------------------------


def test_draining_is_0_then_1_from_the_moment_a_drain_starts() -> None:
    """In a process of its own: a drain, once started, lasts as long as the process. One process
    reads the value at each scrape, with no connection event needed."""
    child = (
        "import closeguard\n"
        "from prometheus_client import generate_latest\n"
        "from closeguard.prometheus import PrometheusCloseMetrics\n"
        "PrometheusCloseMetrics()\n"
        "def shown(): return [line for line in generate_latest().decode().splitlines()\n"
        "                     if line.startswith('closeguard_draining')]\n"
        "print(shown()); closeguard.start_drain(); print(shown())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=ROOT, env=app_env(), capture_output=True, text=True,
        check=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.splitlines() == [
        "['closeguard_draining 0.0']",
        "['closeguard_draining 1.0']",
    ]


WORKER = (
    "import sys, closeguard\n"
    "from closeguard.prometheus import PrometheusCloseMetrics\n"
    "metrics = PrometheusCloseMetrics()\n"
    "if sys.argv[1] == 'drains':\n"
    "    closeguard.start_drain()\n"
    "metrics.connection_opened()  # the drain's first close is the worker's next event\n"
    "metrics.connection_ended()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()  # alive until the test is done with it\n"
)


def test_with_several_workers_draining_is_1_while_a_live_one_drains(tmp_path: Path) -> None:
    """Each worker writes its own value; a scrape shows the largest among the live ones, and a
    dead worker's 1 is forgotten with its other live gauges."""
    env = app_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    workers = {
        role: subprocess.Popen(
            [sys.executable, "-c", WORKER, role],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in ("serves", "drains")
    }
    try:
        for worker in workers.values():
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n"
        assert "closeguard_draining 1.0" in lines_of(tmp_path)
        draining_one = workers["drains"]
        draining_one.kill()
        draining_one.communicate(timeout=30)
        assert "closeguard_draining 0.0" in lines_of(tmp_path)
    finally:
        for worker in workers.values():
            worker.kill()
            worker.communicate(timeout=30)  # and its pipes closed


def lines_of(multiprocess_dir: Path) -> list[str]:
    return exposition(multiprocess_dir=str(multiprocess_dir))[0].decode().splitlines()
