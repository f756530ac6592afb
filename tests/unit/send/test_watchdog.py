"""A run ends in bounded time when the API goes silent or the run is stuck on itself.

The rules as units with a hand-moved clock, then the real ``Sender`` over the in-memory
HighLevel (``tests/fakeapi.py``) in virtual time: an API that dies mid-run, one that keeps
connections open and answers nothing, and a transport that never returns at all.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import structlog

from pipeline.core.outcomes import Code
from pipeline.sandbox import SandboxConfig, SandboxThread
from pipeline.send.watchdog import MAX_BOUND_S, MIN_BOUND_S, Watchdog, bound_for
from tests.conftest import TOKEN, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_resilience import rows_for, start_cli
from tests.fakeapi import FakeHighLevel
from tests.unit.send.test_sender import contacts, send, statuses


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the rules -------------------------------------------------------------------------------


def test_the_bound_follows_the_timeout_within_limits() -> None:
    assert bound_for(30) == 30
    assert bound_for(1) == MIN_BOUND_S
    assert bound_for(600) == MAX_BOUND_S


def test_silence_after_answers_is_a_lost_api() -> None:
    clock = Clock()
    dog = Watchdog(30, clock)
    dog.answered()
    clock.now += 5
    dog.failed("ClientConnectorError: Cannot connect")
    assert dog.silent
    clock.now += 25
    assert dog.check() is None  # 30 s since the last answer: not yet past the bound
    clock.now += 0.5
    stop = dog.check()
    assert stop is not None and stop.code is Code.UNREACHABLE
    assert "Cannot connect" in stop.detail and "no answer for 30 s" in stop.detail


def test_an_answer_ends_the_silence() -> None:
    clock = Clock()
    dog = Watchdog(30, clock)
    dog.failed("timed out")
    clock.now += 29
    dog.answered()
    assert not dog.silent
    clock.now += 29
    assert dog.check() is None


def test_a_wait_the_run_scheduled_is_not_silence() -> None:
    clock = Clock()
    dog = Watchdog(30, clock)
    dog.answered()
    dog.waiting_until(clock.now + 120)  # a 429 said: come back in two minutes
    clock.now += 140
    assert dog.check() is None
    clock.now += 11
    assert dog.check() is not None


def test_a_slow_window_widens_the_bound() -> None:
    clock = Clock()
    dog = Watchdog(30, clock)
    dog.window(60)  # one request a minute at this location
    clock.now += 170
    assert dog.check() is None
    clock.now += 11
    stop = dog.check()
    assert stop is not None and stop.code is Code.STALLED


def test_nothing_at_all_is_a_stall_and_a_settled_row_is_progress() -> None:
    clock = Clock()
    dog = Watchdog(10, clock)
    clock.now += 9
    dog.progressed()
    clock.now += 9
    assert dog.check() is None
    clock.now += 2
    stop = dog.check()
    assert stop is not None and stop.code is Code.STALLED and "report it" in stop.detail


# -- the sender ------------------------------------------------------------------------------

pytestmark_sender = pytest.mark.looptime


@pytestmark_sender
async def test_an_api_that_dies_mid_run_stops_it_within_the_bound() -> None:
    """Connections refused from t=2 s on: the run stops (unreachable) about 30 s after the
    last answer; rows created stay created, rows never sent are skipped / unreachable, and
    the dead API is not hammered (new rows wait while one probe at a time tries)."""
    api = FakeHighLevel(limit=(20, 1.0), latency_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = Counter[str]()
    real_serve = api._serve

    async def counting(*args: object, **kwargs: object) -> object:
        attempts["all"] += 1
        return await real_serve(*args, **kwargs)  # type: ignore[arg-type]

    api._serve = counting  # type: ignore[method-assign]
    loop.call_later(2.0, setattr, api, "unreachable", True)
    with structlog.testing.capture_logs() as logs:
        outcomes, sender = await send(api, [("L1", contacts(500)), ("L2", contacts(500, "d"))])
    elapsed = loop.time() - started
    assert sender.stop_code is Code.UNREACHABLE
    assert "no answer for" in (sender.stop_detail or "")
    assert 30 <= elapsed <= 2 + 30 + 2, elapsed
    counts = statuses(outcomes)
    assert set(counts) <= {
        ("created", None),
        ("skipped", "unreachable"),
        ("failed", "network_error"),
    }
    assert counts[("created", None)] >= 40  # two seconds at 20 a second per location
    assert counts[("skipped", "unreachable")] >= 800
    assert attempts["all"] - counts[("created", None)] < 60, attempts  # not 5 per row
    warnings = [e for e in logs if e["log_level"] == "warning" and e["event"] == "row failed"]
    assert warnings == []  # one summary line instead


@pytestmark_sender
async def test_a_server_that_answers_nothing_stops_the_run() -> None:
    """Connections stay open and nothing comes back (each request times out after 30 s):
    the run stops as unreachable; the rows whose requests were in flight end failed with
    their timeout (that create may have been made), the rest are skipped."""
    api = FakeHighLevel(limit=(10, 1.0), latency_s=0.05)
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, setattr, api, "hang_s", 30.0)
    started = loop.time()
    outcomes, sender = await send(api, [("L1", contacts(200))], max_attempts=3)
    assert sender.stop_code is Code.UNREACHABLE
    assert loop.time() - started <= 1 + 30 + 30 + 12  # bound, then the grace of requests
    counts = statuses(outcomes)
    assert counts[("created", None)] >= 10
    assert counts[("skipped", "unreachable")] >= 150
    assert counts[("failed", "timeout")] >= 1


@pytestmark_sender
async def test_a_transport_that_never_returns_is_a_lost_api() -> None:
    """No answer, no failure, no timeout: requests wait for ever. The run does not."""
    api = FakeHighLevel(hang_s=float("inf"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, sender = await send(api, [("L1", contacts(30))])
    assert sender.stop_code is Code.UNREACHABLE
    assert "no answer ever" in (sender.stop_detail or "")
    assert loop.time() - started < 30 + 1 + 11  # the bound, then the grace (10 s)
    assert statuses(outcomes) == {("skipped", "unreachable"): 30}


@pytestmark_sender
async def test_a_run_stuck_on_itself_is_stopped_by_its_watchdog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn that is never given back (the agency run's hang, put back on purpose): nothing
    is sent, nothing is in flight. The watchdog says so and stops the run."""

    async def never(self: object, known: object) -> bool:
        await asyncio.Event().wait()
        return True

    monkeypatch.setattr("pipeline.send.rows.Turn.take", never)
    api = FakeHighLevel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        outcomes, sender = await send(api, [("L1", contacts(30)), ("L2", contacts(5, "d"))])
    assert sender.stop_code is Code.STALLED
    assert loop.time() - started < 30 + 1
    assert statuses(outcomes) == {("skipped", "stalled"): 35}
    assert api.requests == []
    assert any(e["event"] == "no progress; stopping" for e in logs)


# -- the real thing: a pipeline process and a sandbox that goes away -------------------------


@pytest.mark.timing
def test_a_run_whose_api_dies_exits_1_within_a_minute_with_every_row(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = rows_for(2, 300)
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    proc = start_cli("run", str(src), "-o", str(out), *fast_limits(sandbox, 20, 1000))
    url = sandbox.base_url
    wait_until(lambda: len(sandbox.state.conversations()) >= 60, 30)
    sandbox.stop()  # the API goes away: every connection is refused from now on
    died = time.monotonic()
    _, err = proc.communicate(timeout=90)
    assert time.monotonic() - died < 60, err[-2000:]
    assert proc.returncode == 1, err[-2000:]
    results = pl.read_parquet(out)
    assert results["row_index"].to_list() == list(range(len(rows)))  # every row, once
    counts = Counter(zip(results["status"], results["error_code"], strict=True))
    assert set(counts) <= {
        ("created", None),
        ("exists", "conversation_exists"),
        ("skipped", "unreachable"),
        ("failed", "network_error"),
    }, counts
    assert counts[("skipped", "unreachable")] > 300
    lines = [line for line in err.splitlines() if '"row failed"' in line]
    assert len(lines) <= 2, lines[:3]  # one summary line, not one a row
    assert "the API is lost" in err
    assert url in err  # the line names the URL


@pytest.mark.timing
def test_sigterm_while_the_api_is_gone_stops_the_run_in_bounded_time(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for(2, 300))
    out = tmp_path / "out.parquet"
    proc = start_cli(
        "run", str(src), "-o", str(out), "--timeout", "5", *fast_limits(sandbox, 20, 1000)
    )
    wait_until(lambda: len(sandbox.state.conversations()) >= 40, 30)
    sandbox.update_config(fault_hang=1.0, hang_s=60.0)  # connections open, nothing answers
    time.sleep(2)
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - asked < min(5, 10) + 2 + 1.5, err[-2000:]  # + start-up slack
    assert proc.returncode == 143, err[-2000:]
    results = pl.read_parquet(out)
    assert results.height == 600
    sandbox.call(lambda sb: sb.release_hangs())


@pytest.mark.timing
def test_an_api_that_keeps_connections_open_and_answers_nothing_is_left(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for(1, 200))
    out = tmp_path / "out.parquet"
    limits = fast_limits(sandbox, 20, 1000)
    proc = start_cli("run", str(src), "-o", str(out), "--timeout", "3", *limits)
    wait_until(lambda: len(sandbox.state.conversations()) >= 20, 30)
    sandbox.update_config(fault_hang=1.0, hang_s=120.0)
    hung = time.monotonic()
    _, err = proc.communicate(timeout=90)
    sandbox.call(lambda sb: sb.release_hangs())
    assert time.monotonic() - hung < 10 + 3 + 10, err[-2000:]  # bound, a timeout, grace
    assert proc.returncode == 1, err[-2000:]
    results = pl.read_parquet(out)
    assert results.height == 200
    assert (results["error_code"] == "unreachable").sum() > 100


@pytest.mark.timing
def test_an_oauth_run_whose_api_dies_exits_1_within_a_minute(tmp_path: Path) -> None:
    """The same death with --oauth-file and tokens that expire every 2 s: the refreshes meet
    a closed port too, and the run still ends in bounded time with every row."""
    from tests.e2e.test_oauth import LOCATIONS, configure, grants_for_locations, oauth_file
    from tests.e2e.test_oauth_machinery import start_run

    grants = grants_for_locations(LOCATIONS[:2])
    with SandboxThread(SandboxConfig(tokens=[TOKEN])) as sandbox:
        configure(sandbox, grants, access_token_ttl_s=2, rate_max=50, rate_interval_ms=500)
        credentials = oauth_file(tmp_path, grants)
        rows = [(f"c{i}", LOCATIONS[i % 2]) for i in range(2000)]
        src = write_csv(tmp_path / "in.csv", rows)
        out = tmp_path / "r.parquet"
        run = start_run(sandbox, src, out, credentials, "--rate", "25/500ms")
        try:
            wait_until(lambda: len(sandbox.state.conversations()) >= 100)
            sandbox.stop()
            died = time.monotonic()
            _, stderr = run.communicate(timeout=90)
        finally:
            run.kill()
    assert time.monotonic() - died < 60, stderr[-3000:]
    assert run.returncode == 1, stderr[-3000:]
    results = pl.read_parquet(out)
    assert results["row_index"].to_list() == list(range(2000))
    assert "internal_error" not in set(results["error_code"].drop_nulls())
    assert (results["error_code"] == "unreachable").sum() > 1000


async def test_a_probe_due_closer_than_the_clock_can_tell_goes_now() -> None:
    """While the API is silent, the next probe waits for its time; one due 1e-10 s ahead
    can never be waited for (the event loop fires a timer within its clock's resolution at
    once, and a virtual clock does not move for it), so it is due now. It spun forever in
    virtual time before."""
    from pipeline.send.requests import RequestLayer

    now = 1.0
    watchdog = Watchdog(30.0, clock=lambda: now)
    watchdog.failed("Cannot connect")  # silent: one probe at a time
    layer = RequestLayer(4, watchdog=watchdog, observe=lambda *_: None, clock=lambda: now)
    layer._next_probe_at = now + 1e-10
    assert layer._next_probe_at > now  # not due by ``wait_s <= 0``
    await asyncio.wait_for(layer._probe_turn(), timeout=2.0)
