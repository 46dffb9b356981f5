"""The explorer page: static HTML and script, plus the facts only the server knows, as JSON.

The close-code names and meanings come from :mod:`closeguard.codes` (``CloseCode``,
``name_of`` and ``describe``), so the page never keeps a second copy of the rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from closeguard import CloseCode, classify, describe, name_of

from .settings import Settings

__all__ = ["STATIC_DIR", "code_table", "describe_code", "page"]

STATIC_DIR = Path(__file__).parent / "static"
PLACEHOLDER = "{{CLOSEGUARD_DATA}}"


def code_table() -> list[dict[str, Any]]:
    """Every named close code, with its meaning and whether an endpoint may send it."""
    return [
        {
            "code": int(code),
            "name": name_of(code),
            "description": describe(code),
            "may_be_sent": classify(code).may_be_sent,
        }
        for code in CloseCode
    ]


def _script_json(data: object) -> str:
    # Inside <script>, "</script>" or "<!--" in a value would end or bend the element.
    return json.dumps(data).replace("<", "\\u003c")


def render(settings: Settings) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    data = {"max_message_size": settings.max_message_size, "codes": code_table()}
    return template.replace(PLACEHOLDER, _script_json(data))


def page(settings: Settings) -> HTMLResponse:
    return HTMLResponse(render(settings))


async def describe_code(request: Request) -> JSONResponse:
    """``/codes/{code}``: any integer in words, for codes the embedded table does not name."""
    code = int(request.path_params["code"])
    return JSONResponse({"code": code, "description": describe(code)})
