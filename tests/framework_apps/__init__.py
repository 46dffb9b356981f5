"""One small app per framework, each mounting closeguard the way docs/frameworks.md shows.

tests/test_frameworks.py serves each under uvicorn in its own process. Every app has the same
routes, each ending in a ``{token}`` the test makes up, and writes closeguard's records as JSON
lines to ``$CLOSEGUARD_TEST_LOG``, as ``tests/wire_app.py`` does:

- ``/close/{code}/{token}?reason=...``: accept, then close with that code and reason;
- ``/raise/{token}``: accept, then raise an exception whose text holds a secret;
- ``/return/{token}``: accept, send ``ready``, return without closing;
- ``/echo/{token}``: accept, echo text until the client leaves.

Litestar's app also has ``/idle/{token}``, an echo under the ``idle_timeout`` close policy.
"""

from __future__ import annotations

from importlib.metadata import version

#: The limit every framework app sets: small enough to reach quickly.
LIMIT = 4096
#: The ``idle_timeout`` of Litestar's ``/idle/`` route, in seconds.
IDLE_TIMEOUT = 0.5
#: What the ``/raise/`` routes raise with: it must never reach the wire.
SECRET = "secret detail from the database: password=hunter2"


def _version(distribution: str) -> tuple[int, int]:
    major, minor = version(distribution).split(".")[:2]
    return int(major), int(minor)


#: Quart 0.21+ (Python 3.11+) re-raises a WebSocket's exception when ``PROPAGATE_EXCEPTIONS``
#: is on. Quart 0.20, the last release for Python 3.10, answers it with its traceback page
#: instead: the client gets Quart's 1000, and nothing logs the exception.
QUART_PROPAGATES = _version("quart") >= (0, 21)
