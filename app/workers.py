"""gunicorn's worker for the service: uvicorn-worker's, with the limits ``python -m app`` sets.

``uvicorn_worker.UvicornWorker`` builds uvicorn's ``Config`` from gunicorn's settings plus its
class attribute ``CONFIG_KWARGS``, and gunicorn has no setting for uvicorn's WebSocket frame
limit (16 MiB). With ``CLOSEGUARD_MAX_MESSAGE_SIZE`` above that, uvicorn would close an
oversized message itself (``1009 frame exceeds limit of 16777216 bytes``, no closeguard
reason) before closeguard sees it; this class raises uvicorn's limit as ``python -m app`` does.
Use it with ``gunicorn -k app.workers.CloseguardUvicornWorker`` (deploy/gunicorn.conf.py does).
Only gunicorn imports this module; it needs the ``uvicorn-worker`` package.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from .__main__ import UVICORN_WS_MAX_SIZE
from .settings import load_or_exit

__all__ = ["CloseguardUvicornWorker"]

#: Seconds between uvicorn giving up on open connections (cancelling their tasks, so that
#: closeguard writes their records) and gunicorn's SIGKILL at ``graceful_timeout``: the 1 s a
#: torn-down connection's close may take, the 5 s the lifespan shutdown may then hold for
#: ``on_close`` hooks still running, and 2 s to spare.
KILL_MARGIN = 8


class CloseguardUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn-worker's ``UvicornWorker`` with uvicorn's frame limit above closeguard's."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "ws_max_size": max(UVICORN_WS_MAX_SIZE, 2 * load_or_exit().max_message_size),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn kills a worker still busy ``graceful_timeout`` seconds after SIGTERM; uvicorn
        # alone would wait for its connections without limit, and a killed worker writes no
        # records. uvicorn's own timeout, a little shorter, ends them first.
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - KILL_MARGIN)
