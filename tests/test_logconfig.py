"""closeguard.logconfig: with ``uvicorn myapp:app --log-config FILE`` and the file written by
``python -m closeguard.logconfig text|json``, a plain app's close records reach uvicorn's output
with their level, logger name and fields; without it, measured first, they do not."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.harness import HOST, free_port, running
from closeguard.logconfig import JSON, TEXT, JSONFormatter, main
from tests.conftest import Seen, talk

#: A user's app as the README mounts closeguard, with no logging configuration of its own.
MYAPP = """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    if text == "boom":
        raise RuntimeError("a bug")
    await websocket.close(1000, text)


app = Starlette(routes=[WebSocketRoute("/ws", chat)])
app.add_middleware(WebSocketCloseMiddleware)
"""


def serve_and_talk(tmp_path: Path, log_config: str | None) -> tuple[list[Seen], list[str]]:
    """Run ``uvicorn myapp:app`` (with the config ``python -m closeguard.logconfig`` prints, if
    any), end one connection normally, one by an exception and one by the client with a
    newline in its reason; what the clients saw and uvicorn's output lines."""
    (tmp_path / "myapp.py").write_text(MYAPP)
    command = [sys.executable, "-m", "uvicorn", "myapp:app", "--app-dir", str(tmp_path)]
    command += ["--host", HOST, "--port", str(port := free_port())]
    if log_config is not None:
        config = tmp_path / "log-config.json"
        with config.open("w") as out:
            subprocess.run(
                [sys.executable, "-m", "closeguard.logconfig", log_config],
                stdout=out,
                check=True,
                timeout=30,
            )
        command += ["--log-config", str(config)]
    output = tmp_path / "uvicorn.log"
    url = f"ws://{HOST}:{port}/ws"

    async def clients() -> list[Seen]:
        return [
            await talk(url, ("bye",)),
            await talk(url, ("boom",)),
            await talk(url, close=(4000, "gone\nINFO forged")),
        ]

    with running(command, port, output=output):
        seen = asyncio.run(clients())
    return seen, output.read_text().splitlines()


def closeguard_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "websocket /ws closed:" in line]


def test_without_a_config_an_info_record_never_appears(tmp_path: Path) -> None:
    """What a user sees today: the 1011 record bare, through Python's last-resort handler (no
    level, no logger name), and no trace of the two INFO ones."""
    seen, lines = serve_and_talk(tmp_path, None)
    assert [s.close for s in seen[:2]] == [(1000, "bye"), (1011, "internal error")]
    [line] = closeguard_lines(lines)
    assert line.startswith("websocket /ws closed: code=1011 reason='internal error'")


def test_text_config_shows_every_record_with_level_and_logger(tmp_path: Path) -> None:
    seen, lines = serve_and_talk(tmp_path, "text")
    assert [s.close for s in seen[:2]] == [(1000, "bye"), (1011, "internal error")]
    normal, failed, client = closeguard_lines(lines)
    assert " INFO closeguard: websocket /ws closed: code=1000 reason='bye' initiator=app " in normal
    assert " ERROR closeguard: websocket /ws closed: code=1011 reason='internal error' " in failed
    assert "initiator=middleware exception=RuntimeError " in failed
    # The client's newline is escaped: its record stays one line, and nothing is forged.
    assert " INFO closeguard: " in client
    assert "code=4000 reason='gone\\nINFO forged' initiator=client " in client
    assert not any(line.startswith("INFO forged") for line in lines)
    # uvicorn's own lines go through the same format.
    assert any(" INFO uvicorn.error: Application startup complete." in line for line in lines)


def test_json_config_makes_every_line_one_object_with_the_record_fields(tmp_path: Path) -> None:
    _, lines = serve_and_talk(tmp_path, "json")
    entries = [json.loads(line) for line in lines if line.strip()]  # every line parses
    records = [entry for entry in entries if entry["logger"] == "closeguard"]
    assert [(r["level"], r["code"], r["reason"], r["initiator"]) for r in records] == [
        ("INFO", 1000, "bye", "app"),
        ("ERROR", 1011, "internal error", "middleware"),
        ("INFO", 4000, "gone\\nINFO forged", "client"),
    ]
    assert records[1]["exception"] == "RuntimeError"
    for record in records:
        assert record["path"] == "/ws"
        assert len(record["connection_id"]) == 32
        assert record["message"].startswith("websocket /ws closed: ")
        assert record["time"].endswith("+00:00")
    # uvicorn's traceback travels inside its entry, not as lines of its own.
    [traceback] = [e["exc_info"] for e in entries if "exc_info" in e]
    assert "RuntimeError: a bug" in traceback


def test_json_formatter_keeps_extra_fields_and_drops_uvicorn_colours() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "WARNING", "msg": "a %s", "args": ("b",)}
    )
    record.code = 1009
    record.color_message = "\x1b[1ma %s\x1b[0m"
    entry: dict[str, Any] = json.loads(JSONFormatter().format(record))
    assert entry.pop("time")
    assert entry == {"level": "WARNING", "logger": "x", "message": "a b", "code": 1009}


def test_the_command_prints_each_config_and_refuses_anything_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["text"]) == 0
    assert json.loads(capsys.readouterr().out) == TEXT
    assert main(["json"]) == 0
    assert json.loads(capsys.readouterr().out) == JSON
    assert main(["yaml"]) == 2
    assert "usage: python -m closeguard.logconfig text|json" in capsys.readouterr().err
