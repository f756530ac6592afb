"""Shared fixtures: a sandbox API on a real loopback socket, and a way to run the CLI."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def error_lines(stderr: str) -> list[str]:
    """The fatal error lines on ``stderr``, as a person reads them: ``pipeline: error: ...``
    in plain text, or (under ``--log-format json``) the JSON error event that says it."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("level") == "error" and "exit_code" in event:
                found.append(f"pipeline: error: {event['event']}")
        elif line.startswith("pipeline: "):
            found.append(line)
    return found


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: str = "contactId,locationId"
) -> Path:
    path.write_text(header + "\n" + "".join(f"{c},{loc}\n" for c, loc in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ what a test costs (issue 25)
# Markers (registered in pyproject.toml): `processes` (starts a program: the CLI as a
# subprocess, moto, the Pushgateway, ...), `browser` (headless Chromium), `timing` (depends on
# wall-clock timing: marked in the test files). `make test-fast` leaves all three out.
# `processes` and `browser` are set here from what a test's code names: its function, its
# fixtures, and the functions and classes of the tests/ modules they call, recursively. A test
# that starts a process in a way its code does not name (through the pipeline's own code,
# say) fails with a line saying so: add its node id to PROCESS_TESTS.
PROCESS_NAMES = frozenset(
    {"run_cli", "subprocess", "Popen", "create_subprocess_exec", "create_subprocess_shell"}
    | {"fork", "multiprocessing", "ProcessPoolExecutor"}
)
BROWSER_NAMES = frozenset({"chromium"})
# Tests that start a program through the bench harness or the pipeline's own code: node ids
# without parameters, "tests/test_x.py::test_y".
PROCESS_TESTS = frozenset(
    {
        "tests/bench/test_bench_array.py::test_a_tiny_task_runs_cleanly",
        "tests/bench/test_benchmark.py::test_peak_rss_is_the_program_s_own_not_the_harness_s",
        "tests/bench/test_benchmark.py::test_measured_child_keeps_the_exit_code",
        "tests/unit/send/test_watchdog.py::test_an_oauth_run_whose_api_dies_exits_1_within_a_minute",
    }
)


def _names(obj: object, seen: set[int]) -> set[str]:
    """The global and attribute names ``obj``'s code uses, following what it calls in tests/."""
    obj = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
    obj = inspect.unwrap(obj) if callable(obj) else obj  # type: ignore[arg-type]
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    if isinstance(obj, type):
        found: set[str] = set()
        for member in vars(obj).values():
            found |= _names(getattr(member, "__func__", member), seen)
        return found
    code, scope = getattr(obj, "__code__", None), getattr(obj, "__globals__", {})
    if code is None:
        return set()
    found, codes = set(), [code]
    while codes:
        current = codes.pop()
        found.update(current.co_names)
        codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    for name in found & scope.keys():
        value = scope[name]
        if (getattr(value, "__module__", None) or "").startswith("tests") and callable(value):
            found |= _names(value, seen)
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        seen: set[int] = set()
        names = _names(item.obj, seen)
        for defs in item._fixtureinfo.name2fixturedefs.values():
            for fixturedef in defs:
                names |= _names(fixturedef.func, seen)
        if names & BROWSER_NAMES:
            item.add_marker(pytest.mark.browser)
        if names & (PROCESS_NAMES | BROWSER_NAMES) or item.nodeid.split("[")[0] in PROCESS_TESTS:
            item.add_marker(pytest.mark.processes)


_started: list[str] = []
_popen_init = subprocess.Popen.__init__


def _recording_popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
    first = args if isinstance(args, str | bytes | os.PathLike) else next(iter(args), "")
    _started.append(os.fsdecode(first))
    _popen_init(self, args, *rest, **kw)


subprocess.Popen.__init__ = _recording_popen_init  # type: ignore[method-assign]
os.register_at_fork(before=lambda: _started.append("fork"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    _started.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    result = yield
    programs = sorted({Path(p).name for p in _started})
    if programs and item.get_closest_marker("processes") is None:
        pytest.fail(
            f"started {', '.join(programs)} without the `processes` mark: add the test to "
            "PROCESS_TESTS in tests/conftest.py",
            pytrace=False,
        )
    if any("chrom" in p for p in programs) and item.get_closest_marker("browser") is None:
        pytest.fail("started a browser without the `browser` mark", pytrace=False)
    return result
