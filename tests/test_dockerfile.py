"""The Dockerfile without a Docker engine: its instructions, and its CMD and HEALTHCHECK run here.

The CMD is run exactly as written except for two values: ``--host 0.0.0.0 --port 8000``
become ``127.0.0.1`` and a free port, since a test binds only the loopback interface and
must not collide with anything on 8000. The HEALTHCHECK's URL gets the same port.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app import page
from bench.harness import ROOT, free_port
from tests.app_support import AppProcess, app_env, http_get, run_app
from tests.conftest import talk

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def the(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def exec_form(text: str) -> list[str]:
    argv = json.loads(text)
    assert isinstance(argv, list), text
    assert all(isinstance(arg, str) for arg in argv), text
    return argv


def cmd() -> list[str]:
    (text,) = the("CMD")
    return exec_form(text)


def healthcheck(port: int) -> list[str]:
    (text,) = the("HEALTHCHECK")
    options, _, command = text.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    argv = exec_form(command)
    assert sum("127.0.0.1:8000" in arg for arg in argv) == 1
    return [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in argv]


def with_test_address(argv: list[str], port: int) -> list[str]:
    """The CMD with its host and port values replaced, and nothing else changed."""
    out = list(argv)
    host, port_index = out.index("--host") + 1, out.index("--port") + 1
    assert (out[host], out[port_index]) == ("0.0.0.0", "8000")
    out[host], out[port_index] = "127.0.0.1", str(port)
    return out


# What the image is made of --------------------------------------------------------------------


def test_the_image_is_slim_python_without_test_dependencies() -> None:
    (base,) = the("FROM")
    assert re.fullmatch(r"python:3\.1[1-3]-slim", base)
    runs = " ".join(the("RUN"))
    assert "pip install --no-cache-dir '.[app]'" in runs
    assert "test" not in runs
    assert the("EXPOSE") == ["8000"]


def test_the_service_runs_as_a_non_root_numeric_user() -> None:
    names = [instruction for instruction, _ in instructions()]
    (user,) = the("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert names.index("USER") > max(i for i, name in enumerate(names) if name == "RUN")


def test_the_cmd_is_uvicorn_with_proxy_headers_and_a_graceful_shutdown() -> None:
    argv = cmd()
    assert argv[:2] == ["uvicorn", "app.main:app"]
    assert "--proxy-headers" in argv
    timeout = int(argv[argv.index("--timeout-graceful-shutdown") + 1])
    assert 0 < timeout < 10  # inside the 10 s a runtime waits before SIGKILL


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {pattern[1:] for pattern in patterns if pattern.startswith("!")}
    copied = {
        source
        for args in the("COPY")
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    image = {"pyproject.toml", "README.md", "middleware", "app", "docs/examples/reconnect.js"}
    assert copied == allowed == image
    assert all((ROOT / path).exists() for path in copied)
    # What app/ reads from beyond itself is in the image too, at the same place.
    assert page.RECONNECT_JS.resolve().relative_to(ROOT).as_posix() in copied


def test_what_the_image_copies_builds_a_wheel_with_closeguard(tmp_path: Path) -> None:
    """The image installs the package from the files it copied before its ``pip install``, so
    the wheel built from that copy must hold every module under closeguard/, and only those."""
    context = tmp_path / "image"
    names = [instruction for instruction, _ in instructions()]
    install = next(i for i, name in enumerate(names) if name == "RUN")
    for instruction, args in instructions()[:install]:
        if instruction != "COPY":
            continue
        *sources, _ = args.split()
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / source)
            else:
                context.mkdir(exist_ok=True)
                shutil.copy2(ROOT / source, context / source)
    out = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    subprocess.run([*build, str(context)], check=True, timeout=300)
    (wheel,) = out.glob("closeguard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        installed = set(archive.namelist())
    package = ROOT / "middleware" / "closeguard"
    modules = {
        f"closeguard/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
    }
    assert {name for name in installed if ".dist-info/" not in name} == modules


# Running exactly that CMD -------------------------------------------------------------------


@pytest.fixture
def container_cmd(tmp_path: Path) -> Iterator[AppProcess]:
    port = free_port()
    with run_app(with_test_address(cmd(), port), port, tmp_path / "stdout.log") as running:
        yield running


async def test_the_cmd_serves_healthz_and_closes_websockets(container_cmd: AppProcess) -> None:
    assert http_get(f"{container_cmd.http}/healthz")[:2] == (200, "application/json")
    seen = await talk(f"{container_cmd.ws}/ws/close?code=4000&reason=from%20the%20container")
    assert seen.close == (4000, "from the container")
    assert (await talk(f"{container_cmd.ws}/ws/raise")).close == (1011, "internal error")
    line = container_cmd.wait_for_log(lambda line: line.get("code") == 4000)
    assert (line["logger"], line["path"], line["initiator"]) == ("closeguard", "/ws/close", "app")


def test_the_healthcheck_passes_against_the_running_cmd(container_cmd: AppProcess) -> None:
    check = healthcheck(container_cmd.port)
    done = subprocess.run(check, env=app_env(), capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    container_cmd.stop()
    done = subprocess.run(check, env=app_env(), capture_output=True, timeout=30, check=False)
    assert done.returncode != 0


async def test_sigterm_sends_1012_to_open_websockets_and_logs_their_records(
    container_cmd: AppProcess,
) -> None:
    async with connect(f"{container_cmd.ws}/ws/echo") as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
        client = "{}:{}".format(*ws.local_address[:2])
        started = time.monotonic()
        container_cmd.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012
    assert time.monotonic() - started < 5

    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
    assert container_cmd.process.wait(timeout=10) == -signal.SIGTERM
    records = [line for line in container_cmd.log_lines() if line.get("client") == client]
    assert len(records) == 1
    (record,) = records
    assert record["logger"] == "closeguard"
    assert (record["path"], record["code"], record["initiator"]) == ("/ws/echo", 1012, "server")
    assert (record["messages_received"], record["messages_sent"]) == (1, 1)
    messages = [line["message"] for line in container_cmd.log_lines()]
    assert "Shutting down" in messages
    assert messages[-1].startswith("Finished server process")
