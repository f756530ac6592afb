"""The real thing: the CLI as a subprocess against the sandbox over a loopback socket.

Each test checks results row by row against the sandbox's own record of what it created
and what it received, not against the pipeline's opinion of itself.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
import pytest

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, run_cli, write_csv

RESULT_COLUMNS = {
    "row_index": pl.Int64,
    "contact_id": pl.String,
    "location_id": pl.String,
    "status": pl.String,
    "conversation_id": pl.String,
    "error_code": pl.String,
    "http_status": pl.Int32,
    "error_message": pl.String,
    "attempts": pl.Int32,
    "trace_id": pl.String,
    "finished_at": pl.Datetime("us", "UTC"),
}


def fast_limits(
    sandbox: SandboxThread, max_requests: int = 50, interval_ms: int = 500
) -> list[str]:
    """Shrink the window so tests run in seconds; returns the matching pipeline options."""
    sandbox.update_config(rate_max=max_requests, rate_interval_ms=interval_ms)
    return [
        "--rate",
        f"{max_requests}/{interval_ms}ms",
        "--base-url",
        sandbox.base_url,
        "--log-format",
        "json",
    ]


def create_directly(sandbox: SandboxThread, location: str, contact: str) -> str:
    response = httpx.post(
        f"{sandbox.base_url}/conversations/",
        json={"locationId": location, "contactId": contact},
        headers={"Authorization": f"Bearer {TOKEN}", "Version": "2021-07-28"},
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["conversation"]["id"])


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_sample_file_every_row_accounted_for(sandbox: SandboxThread, tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    done = run_cli(
        "run", str(REPO / "data/sample.csv"), "-o", str(out), *fast_limits(sandbox, 200, 500)
    )
    assert done.code == 1, done.stderr  # the sample has invalid rows on purpose
    results = pl.read_parquet(out)
    source = pl.read_csv(REPO / "data/sample.csv", infer_schema=False)
    assert results.schema == pl.Schema(RESULT_COLUMNS)
    assert results["row_index"].to_list() == list(range(source.height))
    sent = results.filter(pl.col("attempts") > 0)
    assert sent["finished_at"].null_count() == 0  # every row sent has its time
    assert results.filter(pl.col("attempts") == 0)["finished_at"].null_count() == (
        results.height - sent.height
    )
    assert sent["finished_at"].min() >= pl.Series([datetime.now(UTC)]).dt.offset_by("-5m")[0]

    created = sandbox.state.conversations()
    by_status = dict(results.group_by("status").len().iter_rows())
    assert by_status["created"] == len(created) == 984
    assert by_status["duplicate"] == 8 and by_status["invalid"] == 8
    for row in results.iter_rows(named=True):
        key = (row["location_id"], row["contact_id"])
        if row["status"] in ("created", "duplicate"):
            assert row["conversation_id"] == created[key]
        if row["status"] == "created":
            assert (row["error_code"], row["http_status"], row["attempts"]) == (None, 201, 1)
            assert row["trace_id"] is not None  # every JSON answer carries one
        if row["status"] in ("invalid", "duplicate"):
            assert row["trace_id"] is None
        if row["status"] in ("invalid", "duplicate"):
            assert row["attempts"] == 0 and row["http_status"] is None
    sent_contacts = [r.path for r in sandbox.state.requests() if r.method == "POST"]
    assert len(sent_contacts) == 984  # each valid pair once; invalid and duplicate rows never sent
    assert "984 requests" in done.stdout and "created" in done.stdout


def test_all_good_exits_zero_and_keeps_leading_zeros(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [("000123", "L1"), ("000124", "L1"), ("000123", "L1")])
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    results = pl.read_parquet(out)
    assert results["contact_id"].to_list() == ["000123", "000124", "000123"]
    assert results["status"].to_list() == ["created", "created", "duplicate"]
    assert set(sandbox.state.conversations()) == {("L1", "000123"), ("L1", "000124")}


def test_parquet_input(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pl.DataFrame({"contact_id": ["a", "b"], "location_id": ["L", "M"]}).write_parquet(src)
    done = run_cli("run", str(src), "-o", str(tmp_path / "out.parquet"), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    assert set(sandbox.state.conversations()) == {("L", "a"), ("M", "b")}


@pytest.mark.timing
def test_no_location_burst_ever_exceeds_the_limit(sandbox: SandboxThread, tmp_path: Path) -> None:
    """Count, on the server side, requests per sliding window for every location; and see
    the limit used: bursts, a window apart (properties of the arrivals' shape, which a
    loaded machine stretches but does not change)."""
    limit, interval_ms = 20, 1000
    sandbox.update_config(latency_ms=15, latency_jitter_ms=30)
    rows = [(f"c{i}", f"L{i % 3}") for i in range(3 * 50)]
    src = write_csv(tmp_path / "in.csv", rows)
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "out.parquet"),
        *fast_limits(sandbox, limit, interval_ms),
    )
    assert done.code == 0, done.stderr
    log = sandbox.state.requests()
    assert all(r.status != 429 for r in log)
    times: dict[str, list[float]] = defaultdict(list)
    for r in log:
        times[r.location_id].append(r.t)
    for location, arrivals in times.items():
        assert len(arrivals) == 50
        assert max_in_any_window(arrivals, interval_ms / 1000) <= limit, location
        arrivals.sort()
        # The burst is used: requests arrive in bursts of `limit` (split where the location
        # waited), not spread out over the window...
        bursts: list[list[float]] = [[arrivals[0]]]
        for before, t in itertools.pairwise(arrivals):
            if t - before > interval_ms / 1000 / 2:
                bursts.append([])
            bursts[-1].append(t)
        assert [len(b) for b in bursts] == [limit, limit, 50 - 2 * limit], (location, bursts)
        # ...and the limit is used: each burst as soon as the window lets it, none skipped.
        starts = [b[0] for b in bursts]
        for first, then in itertools.pairwise(starts):
            assert 1.0 <= then - first < 2.0, (location, starts)


@pytest.mark.timing
def test_a_throttled_location_does_not_stall_the_others(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [(f"busy{i}", "BUSY") for i in range(40)] + [(f"quiet{i}", "QUIET") for i in range(5)]
    src = write_csv(tmp_path / "in.csv", rows)
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "out.parquet"),
        "--concurrency",
        "4",
        *fast_limits(sandbox, 10, 1000),
    )
    assert done.code == 0, done.stderr
    log = sandbox.state.requests()
    start = min(r.t for r in log)
    quiet = [r.t - start for r in log if r.location_id == "QUIET"]
    busy = sorted(r.t - start for r in log if r.location_id == "BUSY")
    assert max(busy) > 3.0  # BUSY needed four windows...
    # ...while QUIET went straight through: all of it inside the first window (1 s), which
    # BUSY's eleventh request must wait out (a location waiting on BUSY's windows would send
    # in the second one at the earliest). Its five need two round trips: a loaded machine
    # takes more than the half second once asserted, never the whole window.
    assert len(quiet) == 5 and max(quiet) < 1.0 <= busy[10], (quiet, busy[:12])


def test_existing_conversation_is_exists(sandbox: SandboxThread, tmp_path: Path) -> None:
    create_directly(sandbox, "L", "old")
    src = write_csv(tmp_path / "in.csv", [("old", "L"), ("new", "L")])
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    first = pl.read_parquet(out).row(0, named=True)
    assert (first["status"], first["error_code"], first["http_status"]) == (
        "exists",
        "conversation_exists",
        400,
    )
    assert "already exists" in first["error_message"]


def test_server_errors_are_retried_then_reported(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(fault_500=1.0)
    src = write_csv(tmp_path / "in.csv", [("a", "L")])
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--max-attempts", "3", *fast_limits(sandbox))
    assert done.code == 1
    row = pl.read_parquet(out).row(0, named=True)
    assert (row["status"], row["error_code"], row["http_status"], row["attempts"]) == (
        "failed",
        "server_error",
        500,
        3,
    )
    assert len(sandbox.state.requests()) == 3


def test_rejected_token_gives_unauthorized_rows(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "L"), ("b", "L")])
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), *fast_limits(sandbox), token="wrong-token-value"
    )
    assert done.code == 1
    assert set(pl.read_parquet(out)["error_code"]) == {"unauthorized"}
    assert "wrong-token-value" not in done.stdout + done.stderr
    assert sandbox.state.conversations() == {}


def test_dry_run_sends_nothing(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "L"), ("a", "L"), ("", "L")])
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--dry-run", *fast_limits(sandbox), token=None)
    assert done.code == 1  # one invalid row
    results = pl.read_parquet(out)
    assert results["status"].to_list() == ["skipped", "duplicate", "invalid"]
    assert results["error_code"].to_list() == ["dry_run", "duplicate_row", "missing_contact_id"]
    assert sandbox.state.requests() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.csv", "-o", "{tmp}/o.parquet"], "missing.csv: no such file"),
        (["run", "{tmp}/in.csv", "-o", "{tmp}/in.csv"], "the results file is Parquet"),
        (
            ["run", "{tmp}/in.csv", "-o", "{tmp}/o.parquet", "--rate", "fast"],
            "rate (--rate): expected N/Ts, for example 100/10s (got 'fast')",
        ),
        (["run", "{tmp}/in.csv", "-o", "{tmp}/o.parquet", "--concurrency", "0"], "--concurrency"),
        (["run", "{tmp}/in.csv"], "Missing option '-o'"),
        (["run", "{tmp}/in.csv", "-o", "{tmp}/o.parquet", "--no-such-option"], "No such option"),
        (
            ["run", "{tmp}/in.csv", "-o", "{tmp}/o.parquet", "--base-url", "http://example.com"],
            "unencrypted",
        ),
        (["run", "{tmp}/bad.csv", "-o", "{tmp}/o.parquet"], "no contactId column"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    write_csv(tmp_path / "in.csv", [("a", "L")])
    (tmp_path / "bad.csv").write_text("name,email\nx,y\n", encoding="utf-8")
    done = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_missing_token_is_a_usage_error(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "L")])
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), token=None)
    assert done.code == 2 and "GHL_TOKEN" in done.stderr


def test_config_file_sets_defaults_and_the_command_line_wins(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'base-url = "{sandbox.base_url}"\nrate = "50/500ms"\nmax_attempts = 2\n', encoding="utf-8"
    )
    sandbox.update_config(rate_max=50, rate_interval_ms=500, fault_500=1.0)
    src = write_csv(tmp_path / "in.csv", [("a", "L")])
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--config", str(config), "--max-attempts", "1")
    assert done.code == 1, done.stderr
    assert pl.read_parquet(out)["attempts"].to_list() == [1]
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(out), "--config", str(bad))
    assert done.code == 2 and "unknown key 'colour'" in done.stderr


@pytest.mark.parametrize("name", ["example.toml", "sandbox.toml"])
def test_bundled_configs_load(tmp_path: Path, name: str) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "L")])
    config = REPO / "configs" / name
    done = run_cli(
        "run", str(src), "-o", str(tmp_path / "o.parquet"), "--config", str(config), "--dry-run"
    )
    assert done.code == 0, done.stderr


@pytest.mark.parametrize("stack", ["aiohttp", "httpx", "httpx-aiohttp"])
def test_every_http_stack_gives_the_same_results(
    sandbox: SandboxThread, tmp_path: Path, stack: str
) -> None:
    create_directly(sandbox, "L", "c0")
    sandbox.update_config(fault_drop=0.1, fault_500=0.1, seed=1)
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L") for i in range(20)])
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--http-stack",
        stack,
        "--max-attempts",
        "10",
        *fast_limits(sandbox),
    )
    assert done.code == 0, done.stderr[-2000:]
    results = pl.read_parquet(out)
    created = sandbox.state.conversations()
    assert results["status"].to_list() == ["exists"] + ["created"] * 19
    assert results["conversation_id"].to_list() == [created[("L", f"c{i}")] for i in range(20)]
