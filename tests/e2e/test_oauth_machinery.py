"""Issue 24: the token machinery never fails a row as a bug, never refreshes before every
request, and never keeps a stopped run alive. Real processes against the sandbox over
loopback: two runs on one credentials file, a lock another process holds, the OAuth server
gone in the middle of a refresh, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.auth.oauth import LOCK_TIMEOUT_ENV, OAuthSigner, OAuthSource
from pipeline.sandbox import SandboxConfig, SandboxThread
from tests.conftest import REPO, TOKEN, wait_until, write_csv
from tests.e2e.test_oauth import (
    LOCATIONS,
    SECRET,
    assert_no_refresh_token_spent_twice,
    configure,
    grants_for_locations,
    oauth_file,
)

ENV = {"PATH": "/usr/bin:/bin", "GHL_CLIENT_SECRET": SECRET}


def start_run(
    sandbox: SandboxThread, src: Path, out: Path, credentials: Path, *extra: str, **env: str
) -> subprocess.Popen[str]:
    """``pipeline run`` as its own process, with the default --refresh-margin (300 s)."""
    argv = [
        sys.executable, "-m", "pipeline", "run", str(src), "-o", str(out),
        "--oauth-file", str(credentials), "--base-url", sandbox.base_url,
        "--log-format", "json", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env={**ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def accepted_refreshes(sandbox: SandboxThread) -> Counter[str]:
    """Refreshes the sandbox accepted, by grant."""
    return Counter(u.grant or "" for u in sandbox.state.refresh_uses() if u.accepted)


def said(stderr: str) -> list[str]:
    """The tool's own lines on stderr (the log lines are JSON)."""
    return [line for line in stderr.splitlines() if line.startswith("pipeline:")]


# The refresh margin ------------------------------------------------------------------------


def test_the_margin_is_capped_at_half_the_lifetime(tmp_path: Path) -> None:
    credentials = oauth_file(tmp_path, grants_for_locations(["L1"]))
    source = OAuthSource(credentials, 300.0, ("L1",), None)
    signer = OAuthSigner(source, base_url="http://127.0.0.1:9", api_version="v3", timeout=5)
    assert signer.margin() == timedelta(seconds=300)  # no lifetime known yet
    assert signer.margin(2.0) == timedelta(seconds=1)
    assert signer.margin(86_399.0) == timedelta(seconds=300)  # HighLevel's day: as given


def test_a_margin_above_the_lifetime_refreshes_twice_a_lifetime_not_every_request(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens of 2 s under the default margin of 300 s: a refresh each second or so (it was
    one before every request: 1,089 refreshes for 1,089 creates)."""
    monkeypatch.setenv("GHL_CLIENT_SECRET", SECRET)
    grants = grants_for_locations(["L1"])
    configure(sandbox, grants, access_token_ttl_s=2)
    source = OAuthSource.load(oauth_file(tmp_path, grants), 300.0)
    lasting_s = 6.0

    async def sign_for_a_while() -> tuple[int, int]:
        signer = OAuthSigner(source, base_url=sandbox.base_url, api_version="2021-07-28", timeout=5)
        signed = 0
        deadline = time.monotonic() + lasting_s
        try:
            while time.monotonic() < deadline:
                assert await signer.headers("L1")
                signed += 1
                await asyncio.sleep(0.005)
        finally:
            await signer.aclose()
        return signer.refreshes, signed

    refreshes, signed = asyncio.run(sign_for_a_while())
    assert signed > 300
    assert sum(accepted_refreshes(sandbox).values()) == refreshes
    # The first, then one each half lifetime (1 s): 7 over 6 s.
    assert 4 <= refreshes <= 2 * lasting_s / 2 + 2, refreshes


# Two runs on one file ----------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [2.0, 3.0])
def test_two_runs_with_short_tokens_and_the_default_margin(
    sandbox: SandboxThread, tmp_path: Path, ttl: float
) -> None:
    """The user's case: two runs on one --oauth-file whose tokens expire every 2 or 3 s, with
    the default --refresh-margin (above the lifetime). Every row is created (none
    ``internal_error``); no refresh token is spent twice or refused; a few refreshes per
    token lifetime, not one per request."""
    grants = grants_for_locations(LOCATIONS[:3])
    configure(sandbox, grants, access_token_ttl_s=ttl, rate_max=100, rate_interval_ms=500)
    credentials = oauth_file(tmp_path, grants)
    started = time.monotonic()
    procs = []
    for k in range(2):
        rows = [(f"run{k}-c{i}", LOCATIONS[i % 3]) for i in range(1200)]
        src = write_csv(tmp_path / f"in{k}.csv", rows)
        out = tmp_path / f"r{k}.parquet"
        procs.append(start_run(sandbox, src, out, credentials, "--rate", "25/500ms"))
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
    lasted = time.monotonic() - started
    for k in range(2):
        results = pl.read_parquet(tmp_path / f"r{k}.parquet")
        assert set(results["status"]) == {"created"}, results["error_code"].value_counts()
    assert_no_refresh_token_spent_twice(sandbox)
    assert not [u for u in sandbox.state.refresh_uses() if not u.accepted]
    refreshes = accepted_refreshes(sandbox)
    print(f"lasted {lasted:.1f} s; refreshes by grant: {dict(refreshes)}")
    assert len(refreshes) == 3
    for grant, count in refreshes.items():
        # Each half lifetime by one run or the other (two runs may both refresh once as
        # they start, before either knows the lifetime): about 2 per lifetime.
        assert count <= 3 * lasted / ttl + 2, (grant, count, lasted)


# The lock held past its bound --------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipeline.auth.credentials import CredentialsStore

    with CredentialsStore(Path(sys.argv[1])).transaction():
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold_the_lock(credentials: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the credentials file's lock, as a stuck run would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(credentials), str(seconds)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.parametrize("when", ["at the start", "mid-run"])
def test_a_lock_held_past_its_bound_stops_the_run_with_exit_75(
    sandbox: SandboxThread, tmp_path: Path, when: str
) -> None:
    """Exit 75 and one line that says so; the rows not done are skipped with
    ``credentials_locked`` (sent again by --resume), never ``internal_error``."""
    grants = grants_for_locations(LOCATIONS[:2])
    configure(sandbox, grants, access_token_ttl_s=2, rate_max=50, rate_interval_ms=500)
    credentials = oauth_file(tmp_path, grants)
    rows = [(f"c{i}", LOCATIONS[i % 2]) for i in range(1000)]  # 10 s at 50/s a location
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "r.parquet"
    holder = hold_the_lock(credentials, 60) if when == "at the start" else None
    started = time.monotonic()
    run = start_run(
        sandbox, src, out, credentials, "--rate", "25/500ms", **{LOCK_TIMEOUT_ENV: "1.5"}
    )
    try:
        if holder is None:
            wait_until(lambda: len(sandbox.state.conversations()) >= 100)
            holder = hold_the_lock(credentials, 60)
        stdout, stderr = run.communicate(timeout=60)
        lasted = time.monotonic() - started
    finally:
        run.kill()
        if holder is not None:
            holder.kill()
            holder.wait()
    assert run.returncode == 75, stderr[-3000:]
    lines = said(stderr)
    assert lines == [
        f"pipeline: --oauth-file {credentials}: another run (pid {holder.pid}) held its lock "
        "for 1.5 s; try again later"
    ], stderr[-3000:]
    assert "exit 75: stopped: another run held the --oauth-file's lock" in stdout
    results = pl.read_parquet(out)
    assert results.height == 1000
    assert "internal_error" not in set(results["error_code"].drop_nulls())
    problems = results.filter(pl.col("status") != "created")
    assert set(problems["status"]) == {"skipped"}
    assert set(problems["error_code"]) == {"credentials_locked"}
    created = results.height - problems.height
    assert (created == 0) if when == "at the start" else (100 <= created < 1000)
    assert lasted < 20, lasted  # the bound, then the grace of the requests in flight
    print(f"{when}: ended in {lasted:.1f} s, {created} rows created first")


# SIGTERM while a refresh cannot finish -----------------------------------------------------


@pytest.mark.timing
@pytest.mark.parametrize("server", ["holds the refresh", "is gone"])
def test_sigterm_ends_a_run_whose_token_refresh_is_stuck(tmp_path: Path, server: str) -> None:
    """The OAuth server stops answering in the middle of a run (it holds the refresh's
    answer, or it is gone and every attempt is refused after a wait): SIGTERM ends the run
    within min(--timeout, 10) + 2 s, exit 143, the results written (before: a worker thread
    slept between attempts and the loop's shutdown waited for it, past 45 s)."""
    timeout = 4.0
    grants = grants_for_locations(LOCATIONS[:2])
    with SandboxThread(SandboxConfig(tokens=[TOKEN])) as sandbox:
        configure(sandbox, grants, access_token_ttl_s=2, rate_max=50, rate_interval_ms=500)
        credentials = oauth_file(tmp_path, grants)
        rows = [(f"c{i}", LOCATIONS[i % 2]) for i in range(2000)]
        src = write_csv(tmp_path / "in.csv", rows)
        out = tmp_path / "r.parquet"
        run = start_run(
            sandbox, src, out, credentials, "--rate", "25/500ms", "--timeout", f"{timeout:g}"
        )
        try:
            wait_until(lambda: len(sandbox.state.conversations()) >= 100)
            assert run.poll() is None
            if server == "holds the refresh":
                sandbox.update_config(oauth_token_delay_s=120)
                uses = len(sandbox.state.refresh_uses())
                wait_until(lambda: len(sandbox.state.refresh_uses()) > uses)  # one is held
                time.sleep(0.5)
            else:
                sandbox.stop()
                time.sleep(3.0)  # the tokens expire: refresh attempts meet a closed port
            assert run.poll() is None
            signalled = time.monotonic()
            run.send_signal(signal.SIGTERM)
            _, stderr = run.communicate(timeout=60)
            took = time.monotonic() - signalled
        finally:
            run.kill()
    print(f"server {server}: exit {run.returncode} {took:.2f} s after SIGTERM")
    assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert took < min(timeout, 10) + 2, took
    results = pl.read_parquet(out)
    assert results.height == 2000
    assert "internal_error" not in set(results["error_code"].drop_nulls())
    assert set(results["status"]) <= {"created", "skipped", "failed"}
