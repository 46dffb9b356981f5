"""gunicorn with uvicorn workers, serving the closeguard reference service.

From the repository root (or the container's working directory), with ``gunicorn`` and
``uvicorn-worker`` installed::

    export PROMETHEUS_MULTIPROC_DIR=/tmp/closeguard-metrics   # an existing directory
    gunicorn -c deploy/gunicorn.conf.py app.main:app

Command-line options win over this file (``--bind``, ``--workers``, ...). Every line of the
output is a JSON object: gunicorn's own, uvicorn's and closeguard's close records.
tests/test_deploy_gunicorn.py runs exactly this file.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from app.logs import logging_config
from app.settings import load_or_exit

settings = load_or_exit()
if settings.prometheus_multiproc_dir is None:
    # Without it each worker counts alone and /metrics shows whichever worker answers.
    raise SystemExit(
        "deploy/gunicorn.conf.py: set PROMETHEUS_MULTIPROC_DIR to an existing directory "
        "(the workers share their metrics through it)"
    )

bind = ["0.0.0.0:8000"]
workers = 2
# uvicorn-worker's UvicornWorker, with uvicorn's frame limit raised above
# CLOSEGUARD_MAX_MESSAGE_SIZE (gunicorn has no --ws-max-size) and uvicorn's graceful timeout
# inside gunicorn's: see app/workers.py.
worker_class = "app.workers.CloseguardUvicornWorker"
# SIGTERM or SIGHUP: uvicorn sends 1012 to every open WebSocket at once and each gets its
# record; a worker still running after this many seconds is killed (with no records).
graceful_timeout = 15
# uvicorn trusts X-Forwarded-For only from these addresses (a proxy on the same host).
forwarded_allow_ips = "127.0.0.1"
# gunicorn 27's control socket ($HOME/.gunicorn/gunicorn.ctl by default) would be shared by
# every server on the host; nothing here uses it.
control_socket_disable = True

# One format for everything: the service's JSON lines on stdout, gunicorn's own included.
logconfig_dict: dict[str, Any] = logging_config(settings)
logconfig_dict["loggers"].update(
    {
        name: {"handlers": [], "propagate": True, "level": settings.log_level}
        for name in ("gunicorn.error", "gunicorn.access")
    }
)


def on_starting(server: Any) -> None:
    """Before the first worker: forget the metrics of a previous run of this server.

    prometheus_client asks for an empty directory at every start; a reload (SIGHUP) does not
    call this, so the counters go on across it.
    """
    assert settings.prometheus_multiproc_dir is not None
    for path in glob.glob(os.path.join(settings.prometheus_multiproc_dir, "*.db")):
        os.remove(path)


# No child_exit hook (prometheus_client's mark_process_dead): the app's /metrics, through
# closeguard.prometheus.exposition, drops the open-connections file of every worker process
# that no longer exists at each scrape, and keeps its counters.
