"""The explorer page: static HTML and script, plus the facts only the server knows, as JSON.

The close-code names and meanings come from :mod:`closeguard.codes` (``CloseCode``,
``name_of`` and ``describe``), and what a client should do after each close from its
``RETRY_CONTRACT``, so the page never keeps a second copy of the rules. Its reconnect logic is
the documentation's own ``docs/examples/reconnect.js``, served as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)

from closeguard import RETRY_CONTRACT, CloseCode, classify, describe, name_of

from . import policies
from .settings import Settings

__all__ = [
    "RECONNECT_JS",
    "STATIC_DIR",
    "code_table",
    "contract_table",
    "describe_code",
    "page",
    "reconnect_js",
]

STATIC_DIR = Path(__file__).parent / "static"
PLACEHOLDER = "{{CLOSEGUARD_DATA}}"
#: The browser snippet the retry contract page shows: one file, for the docs and this page.
#: It is in a checkout, not in the container image, which copies app/ alone.
RECONNECT_JS = Path(__file__).parent.parent / "docs" / "examples" / "reconnect.js"


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


def contract_table() -> list[dict[str, Any]]:
    """closeguard's retry contract, one row per close (or refusal) it or a policy sends."""
    return [
        {
            "code": None if row.code is None else int(row.code),
            "http_status": row.http_status,
            "reason": row.reason,
            "sent_when": row.sent_when,
            "advice": row.advice.name,
            "advice_text": row.advice.value,
        }
        for row in RETRY_CONTRACT
    ]


def _script_json(data: object) -> str:
    # Inside <script>, "</script>" or "<!--" in a value would end or bend the element.
    return json.dumps(data).replace("<", "\\u003c")


def render(settings: Settings) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    data = {
        "max_message_size": settings.max_message_size,
        "codes": code_table(),
        "contract": contract_table(),
        "policies": [demo.as_dict() for demo in policies.DEMOS],
        "rate_burst": policies.RATE_BURST,
    }
    return template.replace(PLACEHOLDER, _script_json(data))


def page(settings: Settings) -> HTMLResponse:
    return HTMLResponse(render(settings))


async def describe_code(request: Request) -> JSONResponse:
    """``/codes/{code}``: any integer in words, for codes the embedded table does not name."""
    code = int(request.path_params["code"])
    return JSONResponse({"code": code, "description": describe(code)})


async def reconnect_js(request: Request) -> Response:
    """``/reconnect.js``: the docs' browser snippet, the page's reconnect logic."""
    if not RECONNECT_JS.is_file():
        return PlainTextResponse("reconnect.js is not here: run the service from a checkout", 404)
    return FileResponse(RECONNECT_JS, media_type="text/javascript")
