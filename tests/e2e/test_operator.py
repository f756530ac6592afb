"""Operator experience: the dry-run plan, the report in three formats, the cron lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.inputs.planning import IdRules, estimate, plan, to_send
from pipeline.observe.report import build_report, render, render_rows
from pipeline.observe.run_figures import RunInfo
from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits


def planned_frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "row_index": range(len(rows)),
            "contact_id": [c for c, _ in rows],
            "location_id": [loc for _, loc in rows],
        },
        schema={"row_index": pl.Int64, "contact_id": pl.String, "location_id": pl.String},
    )
    return plan(frame.lazy(), IdRules(r"[A-Za-z0-9_-]+", 64)).collect()


def test_estimate_follows_the_per_location_limit_and_daily_quota() -> None:
    rows = [(f"a{i}", "BIG") for i in range(250)] + [(f"b{i}", "SMALL") for i in range(40)]
    rows += [("a0", "BIG"), ("bad/id", "SMALL")]
    planned = planned_frame(rows)
    result = estimate(
        planned, to_send(planned), limits=[(100, 10.0)], daily_quota=200, latency_s=0.0
    )
    assert result.by_status == {"to send": 290, "invalid": 1, "duplicate": 1}
    assert result.requests == 290 and result.locations == 2
    assert result.largest_locations == [("BIG", 250), ("SMALL", 40)]
    assert result.estimated_s == 10.0  # BIG: 200 today (two bursts, 10 s apart), 50 tomorrow
    assert result.over_daily_quota == [("BIG", 50)]
    text = result.render()
    assert "requests to send: 290 over 2 locations" in text
    assert "estimated duration: 10s" in text and "BIG: 50 rows over the daily quota" in text
    slow = estimate(planned, to_send(planned), limits=[(100, 10.0)], daily_quota=200, latency_s=0.6)
    assert slow.estimated_s == pytest.approx(10.6 + 1.2)  # a window a round trip longer
    assert "assuming 600 ms a request" in slow.render()
    # Little's law: 290 requests at 0.6 s, two in flight at a time, need 87 s whatever the
    # windows allow.
    narrow = estimate(
        planned,
        to_send(planned),
        limits=[(100, 10.0)],
        daily_quota=200,
        latency_s=0.6,
        max_in_flight=2,
    )
    assert narrow.estimated_s == pytest.approx(290 * 0.6 / 2)
    # This machine's pace bounds it as well: 290 requests at 10 a second need 29 s.
    paced = estimate(
        planned, to_send(planned), limits=[(100, 10.0)], daily_quota=200, latency_s=0.0, pace=10
    )
    assert paced.estimated_s == pytest.approx(29.0)
    assert "at most 10 requests/s from this machine" in paced.render()


def test_the_plan_of_a_resumed_run_counts_what_is_done_and_what_is_left() -> None:
    """A resume's plan said "to send 290" beside 200 requests: the rows earlier runs settled
    are already done, those without their id only looked up; the counts add up to the rows."""
    rows = [(f"a{i}", "BIG") for i in range(250)] + [(f"b{i}", "SMALL") for i in range(40)]
    rows += [("a0", "BIG"), ("bad/id", "SMALL")]
    planned = planned_frame(rows)
    left = to_send(planned).filter(pl.col("row_index") >= 90)  # 90 done, 5 of them without id
    result = estimate(planned, left, limits=[(100, 10.0)], daily_quota=200, lookups=5)
    assert result.by_status == {
        "to send": 200,
        "to look up": 5,
        "already done": 85,
        "invalid": 1,
        "duplicate": 1,
    }
    assert sum(result.by_status.values()) == result.rows == 292
    assert "  already done        85\n  invalid              1\n" in result.render()


def test_dry_run_prints_the_plan(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", f"L{i % 3}") for i in range(650)])
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), "--dry-run", token=None)
    assert done.code == 0, done.stderr
    assert "plan: 650 rows" in done.stdout
    assert "requests to send: 650 over 3 locations" in done.stdout
    assert "estimated duration: 20s at the per-location limit" in done.stdout  # 217 rows: 3 bursts


def test_report_formats_from_a_real_run(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(location_tokens={"NOPE": "other"}, tokens=[TOKEN, "other"])
    rows = [(f"c{i}", "L1") for i in range(5)] + [("c0", "L1"), ("x/y", "L2"), ("d1", "NOPE")]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1
    assert (
        "top failures:" in done.stdout and "forbidden" in done.stdout
    )  # the summary is the report

    table = run_cli("report", str(out))
    assert table.code == 0, table.stderr
    assert "8 rows -> " in table.stdout
    assert "  created            5" in table.stdout and "locations: 3" in table.stdout
    # five creates and the one request that found NOPE refused (its location went no further)
    assert "\n6 requests in " in table.stdout or " 6 requests in " in table.stdout, table.stdout

    as_json = json.loads(run_cli("report", str(out), "--format", "json").stdout)
    assert as_json["by_status"] == {"created": 5, "duplicate": 1, "invalid": 1, "failed": 1}
    assert as_json["by_error_code"]["forbidden"] == 1
    assert as_json["run"]["requests"] == 6 and as_json["run"]["dry_run"] is False
    assert as_json["top_failures"][0]["error_code"] == "forbidden"

    markdown = run_cli("report", str(out), "--format", "markdown").stdout
    assert "| status | rows |" in markdown and "| created | 5 |" in markdown
    assert "| L1 | 6 | 5 | 1 | 0 | 0 |" in markdown


def test_report_of_a_foreign_or_broken_file(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(other)
    done = run_cli("report", str(other))
    assert done.code == 2 and "not a results file" in done.stderr
    done = run_cli("report", str(tmp_path / "missing.parquet"))
    assert (done.code, done.stderr) == (
        2,
        f"pipeline: error: {tmp_path / 'missing.parquet'}: no such file\n",
    )
    # The run's input given by mistake: what it is not, and what would do.
    done = run_cli("report", "data/sample.csv")
    assert (done.code, done.stderr) == (
        2,
        "pipeline: error: data/sample.csv: not a results file (not Parquet); give the Parquet "
        "file a run wrote with -o, such as out/results.parquet\n",
    )
    # The same file given to retry, or as --known: the same line (it was polars' own words).
    done = run_cli("retry", "data/sample.csv", "-o", str(tmp_path / "x.parquet"))
    assert done.code == 2 and done.stderr.endswith(
        "data/sample.csv: not a results file (not Parquet); give the Parquet file a run wrote "
        "with -o, such as out/results.parquet\n"
    ), done.stderr
    done = run_cli(
        "run", "data/sample.csv", "-o", str(tmp_path / "y.parquet"), "--dry-run",
        "--known", "data/sample.csv",
    )  # fmt: skip
    assert done.code == 2 and "--known data/sample.csv: not a results file (not Parquet)" in (
        done.stderr
    ), done.stderr
    done = run_cli("report", str(tmp_path / "parts" / "*.parquet"))
    assert done.stderr == f"pipeline: error: {tmp_path}/parts/*.parquet: no files match\n"


def test_a_report_never_writes_over_a_results_file(sandbox: SandboxThread, tmp_path: Path) -> None:
    """`report R --format csv -o R` turned the results into CSV (exit 0): the results file
    itself, any Parquet file, and a name ending .parquet are refused; a text file is
    written over as before (a report is made again and again)."""
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L1")])
    out = tmp_path / "r.parquet"
    assert run_cli("run", str(src), "-o", str(out), "--base-url", sandbox.base_url).code == 0
    before = out.read_bytes()
    other = tmp_path / "other.data"
    other.write_bytes(before)  # Parquet by another name
    for target, said in [
        (out, "is the results file being reported; name it r.csv"),
        (tmp_path / "new.parquet", "a report is csv text, not a results file; name it new.csv"),
        (other, "holds Parquet (a results file?); name it other.csv"),
    ]:
        done = run_cli("report", str(out), "--format", "csv", "-o", str(target))
        assert (done.code, done.stderr) == (2, f"pipeline: error: -o {target}: {said}\n")
    assert out.read_bytes() == before and other.read_bytes() == before
    assert not (tmp_path / "new.parquet").exists()
    text = tmp_path / "r.csv"
    text.write_text("an older report\n", encoding="utf-8")
    assert run_cli("report", str(out), "--format", "csv", "-o", str(text)).code == 0
    assert text.read_text(encoding="utf-8").startswith("row_index,")


def test_report_without_run_metadata() -> None:
    frame = pl.DataFrame(
        {
            "row_index": [0],
            "location_id": ["L"],
            "status": ["created"],
            "error_code": [None],
            "error_message": [None],
        },
        schema_overrides={"error_code": pl.String, "error_message": pl.String},
    )
    report = build_report(frame)
    assert report.run is None and report.all_succeeded
    assert "requests in" not in render(report)
    assert RunInfo.from_metadata({"pipeline.run": "not json"}) is None


def test_two_runs_on_one_output_never_overlap(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(latency_ms=300)
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L1") for i in range(30)])
    out = tmp_path / "o.parquet"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            str(src),
            "-o",
            str(out),
            *fast_limits(sandbox, 10, 1000),
        ],
        cwd=REPO,
        env={"GHL_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: bool(sandbox.state.requests()), timeout=20)
    second = run_cli("run", str(src), "-o", str(out), "--resume", *fast_limits(sandbox, 10, 1000))
    assert second.code == 75, second.stderr
    assert f"pid {first.pid}" in second.stderr and "another run" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=60) == 0
    third = run_cli("run", str(src), "-o", str(out), "--resume", *fast_limits(sandbox, 10, 1000))
    assert third.code == 0, third.stderr  # the lock went with the first run


def test_progress_off_a_terminal_is_structured_log_lines(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", f"L{i % 2}") for i in range(60)])
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "o.parquet"),
        "--progress-interval",
        "0.3",
        *fast_limits(sandbox, 20, 1000),
    )
    assert done.code == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if '"progress"' in line]
    assert len(events) >= 2
    assert all(e["total"] == 60 and 0 <= e["done"] <= 60 for e in events)
    assert events[-1]["done"] > events[0]["done"]
    assert set(events[-1]["by_status"]) <= {"created"} and "rows_per_s" in events[-1]
    # The requests in flight and the limit now (auto: sized by the latency, 16 to 4,096).
    assert all(0 <= e["in_flight"] <= e["in_flight_limit"] <= 4096 for e in events)
    assert all(e["in_flight_limit"] >= 16 for e in events if e["in_flight_limit"])


def test_progress_bar_shows_rows_rate_and_counts(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L1") for i in range(40)])
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "o.parquet"),
        "--progress",
        "bar",
        *fast_limits(sandbox, 20, 1000),
        env={"COLUMNS": "160"},  # room for every field (80 columns drop the in-flight ones)
    )
    assert done.code == 0, done.stderr
    assert "sending" in done.stderr and "40/40" in done.stderr
    assert "rows/s" in done.stderr and "created 40" in done.stderr
    assert "in flight " in done.stderr  # now / the limit


def test_journal_tail_counts_only_complete_new_lines(tmp_path: Path) -> None:
    from pipeline.observe.progress import JournalTail

    journal = tmp_path / "j"
    journal.write_bytes(b'{"journal": 1}\n{"status":"created"}\n{"status":"fai')
    tail = JournalTail([journal, tmp_path / "not-yet"], {})
    assert tail.poll() == {"created": 1}
    with journal.open("ab") as handle:
        handle.write(b'led"}\n{"status":"exists"}\n')
    assert tail.poll() == {"created": 1, "failed": 1, "exists": 1}


def test_a_long_failure_message_in_the_table_says_it_was_cut() -> None:
    """The table keeps each top failure on its line: a message longer than 70 characters
    ends in an ellipsis, never mid-word without a sign (the markdown and JSON keep it all)."""
    message = "the API could not be reached or stopped answering; the run stopped before sending"
    frame = pl.DataFrame(
        {
            "row_index": [0],
            "contact_id": ["c"],
            "location_id": ["L1"],
            "status": ["skipped"],
            "error_code": ["unreachable"],
            "error_message": [message],
        }
    )
    table = render(build_report(frame), "table")
    [line] = [line for line in table.splitlines() if "unreachable:" in line]
    assert line == f"        1  unreachable: {message[:69]}…"
    assert message in render(build_report(frame), "markdown")


def test_listed_created_rows_show_their_conversation_ids() -> None:
    """`report --rows created` is for the ids: the table shows them; a listing of rows
    that have none (invalid, failed) leaves the empty column out."""
    frame = pl.DataFrame(
        {
            "row_index": [0, 1],
            "contact_id": ["c0", "c1"],
            "location_id": ["L1", "L1"],
            "status": ["created", "invalid"],
            "conversation_id": ["conv-0", None],
            "error_code": [None, "missing_contact_id"],
            "error_message": [None, "no contact id"],
        }
    )
    created = render_rows(frame.head(1), "table").splitlines()
    assert created[0].split() == [
        "row_index", "contact_id", "location_id", "status", "conversation_id", "error_code",
        "error_message",
    ]  # fmt: skip
    assert "conv-0" in created[1]
    invalid = render_rows(frame.tail(1), "markdown").splitlines()
    assert "conversation_id" not in invalid[0] and "missing_contact_id" in invalid[2]
