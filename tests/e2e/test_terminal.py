"""What a person sees in a terminal: the run under a real pseudo-terminal, its output fed to
a terminal emulator (pyte), and the screen checked as they would read it.

A log line that arrives while the progress bar is live (a location's daily quota spent,
mid-run) must appear whole on a line of its own above the bar, never spliced into it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, write_csv

COLUMNS, LINES = 160, 60
BAR = "━"


def run_in_terminal(args: list[str], timeout: float = 90) -> tuple[int, list[str]]:
    """Run ``pipeline ARGS`` on a pseudo-terminal; its exit code and the screen's lines."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {
        "PATH": "/usr/bin:/bin",
        "TERM": "xterm-256color",
        "GHL_TOKEN": TOKEN,
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            stream.feed(chunk)
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_log_lines_land_above_the_progress_bar_never_inside_it(
    sandbox: SandboxThread, tmp_path: Path, workers: str
) -> None:
    """With workers too: their lines pass through the process that draws the bar."""
    sandbox.update_config(rate_max=25, rate_interval_ms=500, daily_limit=120)
    rows = [(f"c{i}", f"L{i % 2}") for i in range(400)]
    src = write_csv(tmp_path / "in.csv", rows)
    code, screen = run_in_terminal(
        [
            "run",
            str(src),
            "-o",
            str(tmp_path / "r.parquet"),
            "--base-url",
            sandbox.base_url,
            "--workers",
            workers,
        ]
    )
    assert code == 1, "\n".join(screen)
    quota = [line for line in screen if "daily quota spent" in line and "location_id" in line]
    assert len(quota) == 2, "\n".join(screen)  # one log line per location, each whole
    for line in quota:
        assert BAR not in line and "sending" not in line, "\n".join(screen)
        assert line.lstrip().startswith("20"), line  # the log line's timestamp leads it
    bars = [line for line in screen if BAR in line]
    assert len(bars) == 1, "\n".join(screen)  # one bar, redrawn in place
    assert bars[0].startswith("sending") and "400/400" in bars[0], bars[0]
    assert "created 200" in bars[0], bars[0]  # 120 a day each, less the reserve of 20
    assert screen.index(bars[0]) > max(screen.index(line) for line in quota)
