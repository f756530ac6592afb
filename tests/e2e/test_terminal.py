"""What a person sees in a terminal: the run under a real pseudo-terminal, its output fed to
a terminal emulator (pyte), and the screen checked as they would read it.

A log line that arrives while the progress bar is live (a location's daily quota spent,
mid-run) must appear whole on a line of its own above the bar, never spliced into it. On
the common 80 columns, the bar keeps done/total and an ETA that holds through a bursty run.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from pipeline.sandbox import SandboxThread
from pipeline.state.journal import FLUSH_INTERVAL_S
from tests.conftest import REPO, TOKEN, run_cli, write_csv

COLUMNS, LINES = 160, 60
BAR = "━"


Sample = tuple[float, list[str]]  # when (time.monotonic), and the screen's lines then


def run_in_terminal(
    args: list[str],
    timeout: float = 90,
    *,
    columns: int = COLUMNS,
    lines: int = LINES,
    every_s: float | None = None,
    samples: list[Sample] | None = None,
) -> tuple[int, list[str]]:
    """Run ``pipeline ARGS`` on a pseudo-terminal; its exit code and the screen's lines.
    With ``every_s``, the screen is also appended to ``samples`` that often, output or none."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
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
    screen = pyte.Screen(columns, lines)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout
    next_sample = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if every_s is not None and samples is not None:
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic(), [row.rstrip() for row in screen.display]))
                    next_sample += every_s
                ready, _, _ = select.select(
                    [master], [], [], max(0, next_sample - time.monotonic())
                )
                if not ready:
                    continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            stream.feed(chunk)
        if samples is not None:  # the last frames may come in the last read: a sample of them
            samples.append((time.monotonic(), [row.rstrip() for row in screen.display]))
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
        assert re.match(r"\d\d:\d\d:\d\d \[warning\] ", line.lstrip()), line  # its time leads it
    bars = [line for line in screen if BAR in line]
    assert len(bars) == 1, "\n".join(screen)  # one bar, redrawn in place
    assert bars[0].startswith("sending") and "400/400" in bars[0], bars[0]
    assert "created 200" in bars[0], bars[0]  # 120 a day each, less the reserve of 20
    assert screen.index(bars[0]) > max(screen.index(line) for line in quota)


def _bar(screen: list[str]) -> str | None:
    return next((line for line in screen if line.startswith("sending")), None)


def _eta_s(bar: str) -> float | None:
    found = re.search(r"eta (\d+):(\d\d):(\d\d)", bar)
    if found is None:
        return None
    hours, minutes, seconds = map(int, found.groups())
    return 3600 * hours + 60 * minutes + seconds


@pytest.mark.timing
def test_at_80_columns_a_bursty_run_shows_done_total_and_an_eta_that_holds(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """Four windows of 2.5 s per location, each spent in a burst: the ETA, from the plan's
    estimate of the rows left, is within 30% of the time actually left from the second
    window on, or within the figures' own resolution: the bar rounds to whole seconds
    (0.5 s), lags the journals by a flush interval, and the screen is seen only at a sample.
    ``--rate`` tells the plan the sandbox's limit, and a location's 100 rows
    fit in HighLevel's published window (100 per 10 s), which the plan assumes too."""
    interval_s, burst, locations, every_s = 2.5, 25, 2, 0.25
    resolution_s = 0.5 + FLUSH_INTERVAL_S + every_s
    sandbox.update_config(rate_max=burst, rate_interval_ms=int(interval_s * 1000))
    total = 4 * burst * locations
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", f"L{i % locations}") for i in range(total)])
    samples: list[Sample] = []
    args = ["run", str(src), "-o", str(tmp_path / "r.parquet"), "--base-url", sandbox.base_url]
    code, screen = run_in_terminal(
        [*args, "--rate", f"{burst}/{interval_s}s"],
        columns=80,
        every_s=every_s,  # every second or more often: the end is seen within every_s
        samples=samples,
    )
    assert code == 0, "\n".join(screen)
    shown = [(at, _bar(lines)) for at, lines in samples if _bar(lines) is not None]
    assert len(shown) >= 5, "\n".join(screen)
    started = shown[0][0]
    ended = next(at for at, bar in shown if bar and f"{total}/{total}" in bar)
    for at, bar in shown:
        assert bar is not None and len(bar) <= 80, bar
        assert re.search(rf"\b\d+/{total}\b", bar), bar  # done/total, whole
        if at < started + interval_s or at >= ended:
            continue
        assert "eta -:--:--" not in bar, bar
        eta, left = _eta_s(bar), ended - at
        assert eta is not None, bar
        assert abs(eta - left) <= max(0.3 * left, resolution_s), (bar, left)
    final = _bar(screen)
    assert final is not None and f"{total}/{total}" in final and "eta 0:00:00" in final, final
    # The summary below says how the run went; its log line is for JSON logs alone.
    assert not [line for line in screen if re.search(r"\]\s+finished\b", line)], screen


@pytest.mark.parametrize(("log_format", "summary", "logged"), [
    ("console", "table", False),  # a person reads the summary printed below it
    ("console", "none", True),  # nothing below it: the line is the only word on the run
    ("json", "table", True),  # scripts read it
])  # fmt: skip
def test_the_finished_line_is_for_scripts_or_when_no_summary_says_it(
    sandbox: SandboxThread, tmp_path: Path, log_format: str, summary: str, logged: bool
) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L1")])
    done = run_cli(
        *("run", str(src), "-o", str(tmp_path / "r.parquet"), "--base-url", sandbox.base_url),
        *("--log-format", log_format, "--summary", summary),
    )
    assert done.code == 0, done.stderr
    assert "planned" in done.stderr  # the logs are there
    assert bool(re.search(r'(\]\s+|"event": ")finished\b', done.stderr)) is logged, done.stderr
