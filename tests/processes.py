"""The process harness, for the files that still import it from here (tests/servers.py,
tests/test_docs_examples.py and docs/screenshot.py, kept by the documentation's maintainers):
:mod:`bench.harness`'s names, nothing of its own. New code imports :mod:`bench.harness`."""

from __future__ import annotations

from bench.harness import HOST, ROOT, free_port, listening, running, start, stop, wait_until

__all__ = ["HOST", "ROOT", "free_port", "listening", "running", "start", "stop", "wait_until"]
