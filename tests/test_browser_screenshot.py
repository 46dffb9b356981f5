"""docs/screenshot.py, which takes the reference-service page's picture, still works."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from bench.harness import ROOT
from tests.app_support import app_env, chromium_path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_the_screenshot_script_writes_the_whole_page(tmp_path: Path) -> None:
    chromium = chromium_path()
    output = tmp_path / "explorer.png"
    command = [sys.executable, "docs/screenshot.py", "--output", str(output)]
    command += ["--chromium", chromium]
    done = subprocess.run(
        command, cwd=ROOT, env=app_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {output}"
    width, height = png_size(output)
    assert width == 1200
    assert height > 2500  # every scenario ran and shows its two panels


def test_the_committed_screenshot_is_a_full_page_png() -> None:
    width, height = png_size(ROOT / "docs" / "explorer.png")
    assert (width, height > 2500) == (1200, True)
