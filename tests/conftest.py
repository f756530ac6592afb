"""Shared fixtures: a sandbox API on a real loopback socket, and a way to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from pipeline.sandbox import SandboxConfig, SandboxThread

TOKEN = "sandbox-token"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run the CLI in-process configure structlog onto captured streams; put the
    defaults back so a later test never logs into a closed one."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    """A fresh sandbox per test: fast limits are set by the test through update_config."""
    with SandboxThread(SandboxConfig(tokens=[TOKEN])) as server:
        yield server


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, env: dict[str, str] | None = None, token: str | None = TOKEN, timeout: float = 120
) -> Completed:
    """Run ``python -m pipeline`` as a real subprocess, the way users and cron do."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    if token is not None:
        environ["GHL_TOKEN"] = token
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        cwd=REPO,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def wait_until(ready: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``ready`` until it holds or ``timeout`` passes (the test's next assert decides)."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: str = "contactId,locationId"
) -> Path:
    path.write_text(header + "\n" + "".join(f"{c},{loc}\n" for c, loc in rows), encoding="utf-8")
    return path
