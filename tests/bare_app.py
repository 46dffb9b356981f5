"""The wire app's Starlette routes with no closeguard in front: each server on its own.

``tests/test_server_matrix.py`` serves this next to ``tests/wire_app.py`` to show, for each
server, what the client sees without closeguard and with it.
"""

from __future__ import annotations

from tests.wire_app import scenarios

app = scenarios()
