"""Server processes on 127.0.0.1: a free port, start, wait until it listens, stop, read its log.

The one harness for every process the repository starts to talk to over the loopback: the
tests' servers (tests/servers.py, tests/app_support.py, the load test), the benchmarks'
(bench/servers.py), the Autobahn run's (autobahn/run.py) and the screenshot script's service
(docs/screenshot.py). It lives in bench/ so that bench/ and autobahn/ use it without importing
tests/. A process is stopped as a supervisor stops it, SIGTERM, a grace period, then SIGKILL:
its graceful shutdown runs (and can be tested), and a hung one cannot outlive the run.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
#: The repository root: where every process runs, as ``app/`` and ``tests/`` are not installed.
ROOT = Path(__file__).resolve().parent.parent
#: How much of a process's output an error message quotes.
OUTPUT_TAIL = 4000

#: Where a process's output goes: a file or ``subprocess.DEVNULL`` (stdout and stderr both),
#: ``subprocess.PIPE`` (stdout only, for a process that reports on it; stderr stays the
#: parent's), or None (both stay the parent's).
Output = Path | int | None


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick), for a server about to bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(
    command: Sequence[str],
    *,
    output: Output = None,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``cwd`` with ``env`` (default: this process's environment)."""
    environment = dict(env) if env is not None else None
    if isinstance(output, Path):
        with output.open("wb") as out:  # the child keeps its own handle
            return subprocess.Popen(
                list(command), cwd=cwd, env=environment, stdout=out, stderr=subprocess.STDOUT
            )
    stderr = subprocess.DEVNULL if output == subprocess.DEVNULL else None
    return subprocess.Popen(list(command), cwd=cwd, env=environment, stdout=output, stderr=stderr)


def raise_fd_limit() -> int:
    """Lift this process's soft file-descriptor limit to the hard one (children inherit it);
    the soft limit now in force. Many open connections need many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    timeout: float = 20.0,
    what: str = "the server",
    output: Output = None,
) -> None:
    """Poll ``ready`` until it is true; fail if ``process`` exits first or time runs out.

    The error quotes the end of ``output`` when it is a file: why a server did not start is
    usually the last thing it printed.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with status {process.returncode} before it was ready"
                + _tail(output)
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout} s" + _tail(output))
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, ``grace`` seconds to finish, then SIGKILL; the exit status.

    A status of ``-signal.SIGKILL`` says the process did not stop by itself in time.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=5)


@contextmanager
def running(
    command: Sequence[str],
    port: int,
    *,
    output: Output = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    grace: float = 10.0,
    ready: Callable[[], bool] | None = None,
    what: str = "the server",
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` (which serves on ``port``), wait until it listens (or until ``ready``
    says so), and stop it however the block ends."""
    process = start(command, output=output, env=env)
    try:
        wait_until(
            process,
            ready if ready is not None else lambda: listening(port),
            timeout=timeout,
            what=what,
            output=output,
        )
        yield process
    finally:
        stop(process, grace)


def log_lines(path: Path) -> list[str]:
    """The whole lines a process has written to ``path`` so far (a line being written waits
    for the next look)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[: text.rfind("\n") + 1].splitlines()


def _tail(output: Output) -> str:
    if not isinstance(output, Path) or not output.exists():
        return ""
    with output.open("rb") as out:
        out.seek(max(0, os.path.getsize(output) - OUTPUT_TAIL))
        return ":\n" + out.read().decode("utf-8", "replace")
