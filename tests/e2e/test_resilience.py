"""Never lose a row, never create twice: faults, quotas, rejected tokens, crashes, signals.

All against the sandbox over loopback, with the pipeline as a real subprocess; each test
checks the results against the sandbox's own record of what it created.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.outcomes import OUTCOME_COLUMNS
from pipeline.inputs.planning import IdRules, plan
from pipeline.inputs.reading import read_input
from pipeline.sandbox import Fault, SandboxThread
from pipeline.state.journal import fingerprint
from pipeline.state.output_files import OutputFiles
from tests.conftest import REPO, TOKEN, run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits


def rows_for(locations: int, per_location: int) -> list[tuple[str, str]]:
    return [(f"c{i}x{j}", f"L{j}") for i in range(per_location) for j in range(locations)]


def assert_all_settled_right(sandbox: SandboxThread, out: Path, expected_rows: int) -> pl.DataFrame:
    """Every row created or exists, with exactly the id the server holds for its pair."""
    results = pl.read_parquet(out)
    assert results["row_index"].to_list() == list(range(expected_rows))
    created = sandbox.state.conversations()
    bad = results.filter(~pl.col("status").is_in(["created", "exists"]))
    assert bad.height == 0, bad.head(5)
    for row in results.iter_rows(named=True):
        assert row["conversation_id"] == created[(row["location_id"], row["contact_id"])], row
    assert len(created) == expected_rows
    return results


def posts_per_pair(sandbox: SandboxThread) -> Counter[str]:
    return Counter(r.location_id for r in sandbox.state.requests() if r.method == "POST")


def start_cli(*args: str, token: str = TOKEN) -> subprocess.Popen[str]:
    env = {"GHL_TOKEN": token, "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def journal_lines(out: Path) -> int:
    journal = OutputFiles(out).journal
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def test_every_fault_at_once_ends_right(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(
        fault_500=0.08,
        fault_502_after_create=0.08,
        fault_broken_body=0.08,
        fault_drop=0.08,
        fault_429=0.08,
        search_lag_s=0.3,
        seed=11,
    )
    src = write_csv(tmp_path / "in.csv", rows_for(4, 50))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--max-attempts", "8", *fast_limits(sandbox, 400, 500)
    )
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 200)
    counts = Counter(results["status"].to_list())
    assert counts["exists"] > 0  # 502-after-create and broken bodies were recovered by search
    faults = Counter(r.fault for r in sandbox.state.requests())
    assert all(faults[f] > 0 for f in Fault if f is not Fault.HANG), faults


def test_a_hang_past_the_timeout_is_retried_and_found(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(fault_hang=0.2, hang_s=3.0, seed=5)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 10))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--timeout", "0.5", *fast_limits(sandbox, 400, 500)
    )
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 20)
    assert (results["attempts"] > 1).any()


@pytest.mark.parametrize("retry_after", [True, False])
def test_429_with_and_without_retry_after(
    sandbox: SandboxThread, tmp_path: Path, retry_after: bool
) -> None:
    sandbox.update_config(fault_429=0.3, retry_after=retry_after, seed=3)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 15))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--max-attempts", "10", *fast_limits(sandbox, 400, 500)
    )
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 30)
    assert results["status"].to_list() == ["created"] * 30
    assert (results["attempts"] > 1).any()


def test_server_limits_beat_a_generous_setting(sandbox: SandboxThread, tmp_path: Path) -> None:
    """The client thinks 200/s; the server allows 10/s and says so in its headers."""
    sandbox.update_config(rate_max=10, rate_interval_ms=1000, retry_after=True)
    src = write_csv(tmp_path / "in.csv", rows_for(1, 40))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--rate",
        "200/1s",
        "--max-attempts",
        "10",
        "--concurrency",
        "8",
        "--base-url",
        sandbox.base_url,
    )
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 40)
    log = sandbox.state.requests()
    start = min(r.t for r in log)
    late_429 = [r for r in log if r.status == 429 and r.t - start > 1.5]
    assert late_429 == []  # once the headers were read, the client kept inside the limit


def test_daily_quota_skips_that_location_only(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(daily_limit=10)
    rows = [(f"a{i}", "SPENT") for i in range(15)] + [(f"b{i}", "FINE") for i in range(5)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--concurrency", "2", "--daily-reserve", "0",
        *fast_limits(sandbox),
    )  # fmt: skip
    assert done.code == 1
    results = pl.read_parquet(out)
    spent = results.filter(pl.col("location_id") == "SPENT")
    assert Counter(spent["status"].to_list()) == {"created": 10, "skipped": 5}
    assert set(spent["error_code"].drop_nulls()) == {"daily_quota_exhausted"}
    assert results.filter(pl.col("location_id") == "FINE")["status"].to_list() == ["created"] * 5
    # The answer that spends the quota says so; only a request already in flight goes past it.
    assert posts_per_pair(sandbox)["SPENT"] <= 11


def test_rejected_token_stops_early(sandbox: SandboxThread, tmp_path: Path) -> None:
    secret = "pit-rejected-0123456789abcdef"
    src = write_csv(tmp_path / "in.csv", rows_for(5, 100))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--concurrency", "4", *fast_limits(sandbox), token=secret
    )
    assert done.code == 1
    assert len(sandbox.state.requests()) == 1  # the token's first request went alone
    results = pl.read_parquet(out)
    assert results.height == 500
    assert set(results["error_code"]) == {"unauthorized"}
    assert set(results["status"]) == {"failed", "skipped"}
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in written and secret not in done.stdout + done.stderr


def test_forbidden_location_is_given_up_others_go_on(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(
        location_tokens={"THEIRS": "another-token"}, tokens=[TOKEN, "another-token"]
    )
    rows = [(f"a{i}", "THEIRS") for i in range(20)] + [(f"b{i}", "OURS") for i in range(5)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--concurrency", "2", *fast_limits(sandbox))
    assert done.code == 1
    results = pl.read_parquet(out)
    theirs = results.filter(pl.col("location_id") == "THEIRS")
    assert set(theirs["error_code"]) == {"forbidden"}
    assert posts_per_pair(sandbox)["THEIRS"] == 1  # the location's first request went alone
    assert results.filter(pl.col("location_id") == "OURS")["status"].to_list() == ["created"] * 5


def test_sigkill_then_resume_loses_nothing_and_creates_nothing_twice(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = rows_for(3, 200)
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox, 60, 500)]
    proc = start_cli(*args)
    wait_until(lambda: journal_lines(out) >= 150, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    journalled = journal_lines(out) - 1
    assert 0 < journalled < 600
    assert OutputFiles(out).stage.is_dir()  # the plan it was sending from

    done = run_cli(*args)  # without --resume: refused, nothing sent
    assert done.code == 2 and "--resume" in done.stderr

    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 600)
    # Nothing is left beside the results: not the journal, the stage or the lock file (the
    # one the killed run left was taken over and removed).
    assert sorted(tmp_path.iterdir()) == [src, out]
    # Rows sent twice are those in flight or not yet flushed at the kill: at most ~1 s of sending.
    sent = Counter((r.location_id, r.t) for r in sandbox.state.requests() if r.method == "POST")
    twice = len(sent) - 600
    assert twice <= 3 * 60 * 2, twice
    assert Counter(results["status"].to_list())["exists"] == twice


def test_torn_journal_is_survived(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for(1, 10))
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox)]
    assert run_cli(*args).code == 0
    first = pl.read_parquet(out)
    out.unlink()
    # Rebuild a journal as a crash would leave it: header, 3 records, a torn 4th.
    sandbox_rows = first.head(3).to_dicts()
    planned = plan(read_input(src), IdRules(r"[A-Za-z0-9_-]+", 64)).collect()
    journal = OutputFiles(out).journal
    lines = [json.dumps({"journal": 1, "fingerprint": fingerprint(planned)})]
    lines += [json.dumps({k: r[k] for k in OUTCOME_COLUMNS}, default=str) for r in sandbox_rows]
    journal.write_text("\n".join(lines) + '\n{"row_index": 3, "status": "cre', encoding="utf-8")
    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    results = pl.read_parquet(out)
    assert results["conversation_id"].to_list() == first["conversation_id"].to_list()
    assert results["status"].to_list()[:3] == ["created"] * 3  # kept from the journal
    assert results["status"].to_list()[3:] == ["exists"] * 7  # sent again: harmless


def test_journal_of_another_input_is_refused(sandbox: SandboxThread, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    journal = OutputFiles(out).journal
    journal.write_text(json.dumps({"journal": 1, "fingerprint": "0" * 32}) + "\n", encoding="utf-8")
    src = write_csv(tmp_path / "in.csv", rows_for(1, 3))
    done = run_cli("run", str(src), "-o", str(out), "--resume", *fast_limits(sandbox))
    assert done.code == 2 and "different input" in done.stderr
    assert sandbox.state.requests() == []


def test_sigterm_writes_results_and_exits_143(sandbox: SandboxThread, tmp_path: Path) -> None:
    rows = rows_for(2, 300)
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox, 50, 500)]
    proc = start_cli(*args)
    wait_until(lambda: journal_lines(out) >= 50, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr[-2000:]
    results = pl.read_parquet(out)
    assert results.height == 600
    counts = Counter(results["status"].to_list())
    assert counts["created"] > 0 and counts["skipped"] > 0
    assert set(results.filter(pl.col("status") == "skipped")["error_code"]) == {"interrupted"}
    created = sandbox.state.conversations()
    for row in results.filter(pl.col("status") == "created").iter_rows(named=True):
        assert row["conversation_id"] == created[(row["location_id"], row["contact_id"])]
    assert len(created) == counts["created"]  # nothing created that the results do not show

    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 600)
    assert Counter(pl.read_parquet(out)["status"].to_list())["exists"] == 0  # nothing re-sent


@pytest.mark.timing
def test_second_sigint_leaves_at_once(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(latency_ms=3000)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 20))
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox)]
    proc = start_cli(*args)
    wait_until(lambda: bool(sandbox.state.requests()), timeout=20)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert time.monotonic() - started < 2.0  # did not wait out the 3 s answers
    # Issue 26: it says so, in one line that keeps the journal and continues from it.
    again = shlex.join([".venv/bin/pipeline", *args, "--resume"])
    assert stderr.splitlines()[-1] == (
        "pipeline: interrupted again: stopped at once, without writing the results; the "
        f"journal keeps every settled row: continue with: {again}"
    )
    journal = OutputFiles(out).journal
    assert journal.exists() and journal.read_text(encoding="utf-8").startswith('{"journal": 1')


@pytest.mark.parametrize("gap_s", [0.0, 0.02, 0.05, 0.1])
def test_two_quick_ctrl_cs_always_say_how_to_continue(
    sandbox: SandboxThread, tmp_path: Path, gap_s: float
) -> None:
    """The second Ctrl-C may land while requests finish (the sending's handler leaves at
    once), or after, while the results are written (it was exit 130 and not a word): either
    way one line gives the --resume command, and pasted it settles every row once."""
    src = write_csv(tmp_path / "in.csv", rows_for(2, 300))
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox, 50, 500)]
    proc = start_cli(*args)
    wait_until(lambda: journal_lines(out) >= 20, timeout=30)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    again = shlex.join([".venv/bin/pipeline", *args, "--resume"])
    said = [line for line in (stdout + stderr).splitlines() if again in line]
    assert said, (stdout[-1000:], stderr[-1000:])
    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 600)
    assert max(posts_per_pair(sandbox).values()) <= 600  # nothing created twice


def test_retry_sends_only_what_did_not_settle(sandbox: SandboxThread, tmp_path: Path) -> None:
    rows = [("a", "L"), ("b", "L"), ("a", "L"), ("bad/id", "L"), ("c", "M")]
    src = write_csv(tmp_path / "in.csv", rows)
    sandbox.update_config(fault_500=1.0)
    first = tmp_path / "first.parquet"
    done = run_cli("run", str(src), "-o", str(first), "--max-attempts", "1", *fast_limits(sandbox))
    assert done.code == 1
    assert pl.read_parquet(first)["error_code"].to_list() == [
        "server_error",
        "server_error",
        "duplicate_row",
        "invalid_contact_id",
        "server_error",
    ]
    sandbox.update_config(fault_500=0.0)
    second = tmp_path / "second.parquet"
    done = run_cli("retry", str(first), "-o", str(second), *fast_limits(sandbox))
    assert done.code == 1  # the invalid row stays invalid
    results = pl.read_parquet(second)
    assert results["status"].to_list() == ["created", "created", "duplicate", "invalid", "created"]
    created = sandbox.state.conversations()
    assert results["conversation_id"].to_list()[2] == created[("L", "a")]
    assert posts_per_pair(sandbox) == Counter({"L": 2 + 2, "M": 1 + 1})


def test_a_resume_adds_its_figures_to_the_first_runs(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """The results file's run figures count every run that wrote it: a --resume that sends
    the failed rows adds its requests, and one that finds nothing left keeps them all (it
    wrote its own empty figures over the first run's)."""
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L") for i in range(6)])
    out = tmp_path / "r.parquet"
    sandbox.update_config(fault_500=1.0)
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox)]
    assert run_cli(*args, "--max-attempts", "1").code == 1

    def figures() -> dict[str, object]:
        return json.loads(pl.read_parquet_metadata(out)["pipeline.run"])  # type: ignore[no-any-return]

    first = figures()
    assert (first["requests"], first["runs"]) == (6, 1)
    sandbox.update_config(fault_500=0.0)
    assert run_cli(*args, "--resume").code == 0
    second = figures()
    assert second["requests"] == 12 and second["runs"] == 2
    assert second["started_at"] == first["started_at"]
    assert second["elapsed_s"] >= first["elapsed_s"]  # type: ignore[operator]
    done = run_cli(*args, "--resume", "--summary", "table")
    assert done.code == 0
    third = figures()
    assert third["requests"] == 12 and third["runs"] == 3, third
    assert (
        "12 requests in " in done.stdout
        and "over 3 runs (the first and 2 --resumes)" in done.stdout
    )
    assert posts_per_pair(sandbox) == Counter({"L": 12})


def test_a_dry_run_never_writes_its_plan_over_the_results_it_was_asked_to_resume(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """--dry-run --resume over a finished run's results was exit 0 and every id gone (the
    plan's skipped/dry_run rows in their place). It is refused in one line, the file left
    as it was; the line's suggestion, pasted, plans only what is left."""
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L") for i in range(5)])
    out = tmp_path / "r.parquet"
    assert run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox)).code == 0
    before = out.read_bytes()
    done = run_cli("run", str(src), "-o", str(out), "--resume", "--dry-run")
    assert done.code == 2, done.stderr
    assert done.stderr == (
        f"pipeline: error: {out}: --dry-run with --resume would write its plan over this run's "
        f"results; to see what is left to send, plan into another file: --dry-run --known {out} "
        "-o plan.parquet\n"
    )
    assert out.read_bytes() == before
    plan = tmp_path / "plan.parquet"
    suggested = run_cli("run", str(src), "--dry-run", "--known", str(out), "-o", str(plan))
    assert suggested.code == 0, suggested.stderr
    assert pl.read_parquet(plan)["status"].to_list() == ["exists"] * 5  # known: none to send
    fresh = run_cli("run", str(src), "-o", str(tmp_path / "new.parquet"), "--resume", "--dry-run")
    assert fresh.code == 0, fresh.stderr  # nothing to lose: a cron line's --resume is fine


def test_a_report_of_a_run_still_writing_says_so(sandbox: SandboxThread, tmp_path: Path) -> None:
    """`pipeline report OUT` while the run sends said 'no such file': the results come at
    the end of the run whose journal is there, or of its --resume."""
    src = write_csv(tmp_path / "in.csv", rows_for(2, 300))
    out = tmp_path / "out.parquet"
    proc = start_cli("run", str(src), "-o", str(out), *fast_limits(sandbox, 20, 1000))
    try:
        wait_until(lambda: journal_lines(out) >= 1, timeout=30)
        done = run_cli("report", str(out))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert (done.code, done.stderr) == (
        2,
        f"pipeline: error: {out}: no results yet: a run is writing them, or stopped before it "
        f"could (its journal: {out}.journal); they are written when it ends, or by the same "
        "command with --resume\n",
    )
