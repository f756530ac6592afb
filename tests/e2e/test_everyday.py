"""Everyday use, as a person meets it: the files analysts have, the CLI's own words.

Each test does what the person did and checks what they now see.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.values import parse_separator
from pipeline.inputs.reading import read_input, sniff_separator
from pipeline.sandbox import SandboxThread
from tests.conftest import run_cli
from tests.e2e.test_end_to_end import fast_limits

ROWS = [("c1", "L1"), ("c2", "L1"), ("c3", "L2")]
# How a printed command calls the program: the console script beside this interpreter, as
# the tests run from the repository (tests/e2e/test_next_steps.py pastes such commands).
PROGRAM = ".venv/bin/pipeline"


@pytest.mark.parametrize(
    ("name", "separator"),
    [("semicolon.csv", ";"), ("tabs.tsv", "\t"), ("tabs.csv", "\t"), ("pipes.csv", "|")],
)
def test_a_spreadsheets_separator_is_read_from_the_header(
    tmp_path: Path, name: str, separator: str
) -> None:
    path = tmp_path / name
    lines = [f"Contact ID{separator}Location ID{separator}Note"]
    lines += [f"{c}{separator}{loc}{separator}a, b" for c, loc in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame = read_input(path).collect()
    assert frame.select("contact_id", "location_id").rows() == ROWS


def test_the_separator_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("contactId;locationId\nc1;L1\n", encoding="utf-8")
    assert read_input(path).collect()["contact_id"].to_list() == ["c1"]  # sniffed
    with pytest.raises(Exception, match="no contactId column"):  # forced: one column
        read_input(path, separator=",").collect()


def test_sniffing_ignores_separators_inside_quotes() -> None:
    assert sniff_separator('"Contact, ID";"Location, ID"') == ";"
    assert sniff_separator("contactId") == ","  # one column: comma as ever


@pytest.mark.parametrize(
    ("given", "separator"), [("semicolon", ";"), ("TAB", "\t"), ("\\t", "\t"), ("|", "|")]
)
def test_separator_names(given: str, separator: str) -> None:
    assert parse_separator(given) == separator


def test_a_semicolon_export_runs_end_to_end(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    src.write_text(
        "\ufeffContact ID;Location ID\r\n" + "".join(f"{c};{loc}\r\n" for c, loc in ROWS),
        encoding="utf-8",
    )
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), *fast_limits(sandbox))
    assert done.code == 0, done.stderr[-1500:]
    assert pl.read_parquet(tmp_path / "o.parquet")["status"].to_list() == ["created"] * 3


def test_bad_separator_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc,l\n", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), "--separator", "ab")
    assert done.code == 2
    assert done.stderr.strip().splitlines() == [
        "pipeline: error: bad configuration (command line, GHL_* environment): separator "
        "(--separator): expected one character, or comma, semicolon, tab or pipe (got 'ab')"
    ]


def test_an_output_not_named_parquet_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc,l\n", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(tmp_path / "results.csv"))
    assert done.code == 2 and not (tmp_path / "results.csv").exists()
    assert done.stderr.strip().splitlines() == [
        f"pipeline: error: -o {tmp_path / 'results.csv'}: the results file is Parquet (resume, "
        "retry and report read it); name it results.parquet, and write a CSV of it with "
        "pipeline report RESULTS --format csv -o FILE.csv"
    ]


def test_problem_rows_as_csv_fixed_and_run_again(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    src.write_text(
        "Contact Id,Location Id,Email\nc1,L1,a@x\nc/2,L1,b@x\n,L1,c@x\nc4,L1,d@x\n",
        encoding="utf-8",
    )
    out = tmp_path / "results.parquet"
    first = run_cli(
        "run", str(src), "-o", str(out), "--keep-columns", "Email", *fast_limits(sandbox)
    )
    assert first.code == 1
    problems = tmp_path / "problems.csv"
    done = run_cli(
        "report", str(out), "--rows", "invalid,failed", "--format", "csv", "-o", str(problems)
    )
    assert done.code == 0 and done.stdout == ""
    rows = list(csv.DictReader(io.StringIO(problems.read_text(encoding="utf-8"))))
    assert [(r["contact_id"], r["error_code"], r["Email"]) for r in rows] == [
        ("c/2", "invalid_contact_id", "b@x"),
        ("", "missing_contact_id", "c@x"),
    ]
    # The analyst fixes the IDs in the CSV and runs it as it is.
    fixed = problems.read_text(encoding="utf-8").replace("c/2", "c2").replace(",,L1", ",c3,L1")
    problems.write_text(fixed, encoding="utf-8")
    again = run_cli(
        "run", str(problems), "-o", str(tmp_path / "again.parquet"), *fast_limits(sandbox)
    )
    assert again.code == 0, again.stderr[-1500:]
    assert pl.read_parquet(tmp_path / "again.parquet")["contact_id"].to_list() == ["c2", "c3"]


def test_report_lists_rows_in_a_table(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc1,L1\nbad id,L1\n", encoding="utf-8")
    out = tmp_path / "r.parquet"
    run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    done = run_cli("report", str(out), "--rows", "invalid")
    assert done.code == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "row_index",
        "contact_id",
        "location_id",
        "status",
        "error_code",
        "error_message",
    ]
    assert lines[1].split()[:5] == ["1", "bad", "id", "L1", "invalid"] and lines[-1] == "1 row"
    bad = run_cli("report", str(out), "--rows", "broken")
    assert bad.code == 2 and "expected statuses from" in bad.stderr


def test_a_bare_pipeline_prints_its_help_on_stdout() -> None:
    """Issue 26: as gh and git do, so that `pipeline | less` shows it; exit 0."""
    done = run_cli()
    assert (done.code, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0] == "Usage: pipeline [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in done.stdout


@pytest.mark.parametrize(
    ("args", "usage"),
    [(["run"], "pipeline run [OPTIONS] INPUT"), (["report"], "pipeline report [OPTIONS] RESULTS")],
)
def test_a_command_without_its_arguments_is_a_usage_error(args: list[str], usage: str) -> None:
    done = run_cli(*args)
    assert (done.code, done.stdout) == (2, "")
    assert done.stderr.splitlines()[0] == f"Usage: {usage}"
    assert "Options:" in done.stderr or "Input:" in done.stderr  # the sections of run's help


def test_a_token_pasted_as_a_variable_name_is_never_echoed(tmp_path: Path) -> None:
    token = "pit-7f3c9a2e-4b1d-4e8a-9c6f-2d5b8e1a0c47"
    done = run_cli("run", "in.csv", "-o", str(tmp_path / "o.parquet"), "--token-env", token)
    assert done.code == 2 and token not in done.stdout + done.stderr
    assert "expected the name of an environment variable" in done.stderr


def test_a_bad_value_names_the_place_that_holds_it(tmp_path: Path) -> None:
    done = run_cli("run", "in.csv", "-o", str(tmp_path / "o.parquet"), env={"GHL_CONCURRENCY": "0"})
    assert done.code == 2
    assert "concurrency (GHL_CONCURRENCY in the environment)" in done.stderr
    config = tmp_path / "c.toml"
    config.write_text("[run]\ntimeout = -1\n", encoding="utf-8")
    done = run_cli("run", "in.csv", "-o", str(tmp_path / "o.parquet"), "--config", str(config))
    assert f"timeout (timeout in {config})" in done.stderr


def test_the_summary_counts_real_locations_and_says_what_to_do_next(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "contactId,locationId\nc1,L1\nc2,L2\nc3,\nc4,loc#1\nbad id,L1\n", encoding="utf-8"
    )
    out = tmp_path / "r.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1
    assert "locations: 2; 2 rows without a usable location id" in done.stdout
    assert "  None " not in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == (
        f"next: 3 rows need attention: {PROGRAM} report {out} --rows failed,invalid,skipped "
        f"--format csv -o {tmp_path}/r-problems.csv"
    )
    clean = tmp_path / "clean.csv"
    clean.write_text("contactId,locationId\nc9,L1\n", encoding="utf-8")
    done = run_cli("run", str(clean), "-o", str(tmp_path / "c.parquet"), *fast_limits(sandbox))
    last = done.stdout.rstrip().splitlines()[-1]
    assert last == f"next: {PROGRAM} report {tmp_path}/c.parquet"


def test_fail_on_decides_the_exit_code_and_says_so(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "nightly.csv"
    src.write_text("contactId,locationId\nc1,L1\n,L1\nc3,L1\n", encoding="utf-8")  # a blank ID
    done = run_cli("run", str(src), "-o", str(tmp_path / "a.parquet"), *fast_limits(sandbox))
    assert done.code == 1
    assert "exit 1: 1 row matches --fail-on invalid,failed,skipped" in done.stdout.splitlines()
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "b.parquet"),
        "--fail-on",
        "failed,unauthorized,daily_quota_exhausted",
        *fast_limits(sandbox),
    )
    assert done.code == 0, done.stderr[-1000:]
    assert "exit 0: 0 rows match --fail-on failed,unauthorized,daily_quota_exhausted" in (
        done.stdout.splitlines()
    )
    bad = run_cli("run", str(src), "-o", str(tmp_path / "c.parquet"), "--fail-on", "oops")
    assert bad.code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "expected statuses" in bad.stderr


def test_no_lock_file_is_left_behind_and_a_held_lock_still_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.state.locking import OutputLocked, exclusive
    from pipeline.state.output_files import OutputFiles

    files = OutputFiles(tmp_path / "r.parquet")
    with exclusive(files):
        assert files.lock.exists()
        with pytest.raises(OutputLocked), exclusive(files):
            pass
    assert not files.lock.exists()
    # A racer that opened the lock file just before its owner removed it, and locks that
    # orphan afterwards, must not share the lock with the run that made a new file: it must
    # see that the path no longer names what it locked, open the path again, and be refused.
    with exclusive(files):
        stale = os.open(files.lock, os.O_RDWR)  # the racer's open, before the removal
    real_open = os.open
    handed: list[int] = []

    def racer_open(path: object, flags: int, mode: int = 0o777, **kw: object) -> int:
        if Path(str(path)) == files.lock and not handed:  # the racer's first open: the orphan
            handed.append(os.dup(stale))
            return handed[0]
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    with exclusive(files):  # a new file at the path, held
        monkeypatch.setattr(os, "open", racer_open)
        with pytest.raises(OutputLocked), exclusive(files):  # the orphan locks; the path does not
            pass
        monkeypatch.undo()
        assert handed, "the racer never got the orphan"
        assert files.lock.exists()  # and the holder's file is still there
    os.close(stale)
    assert not files.lock.exists()


def test_counts_of_one_are_singular(sandbox: SandboxThread, tmp_path: Path) -> None:
    """Issue 26: "1 row", "1 location", "1 request" wherever a count is printed: the plan,
    the summary, the advice and a report's listing."""
    src = tmp_path / "one.csv"
    src.write_text("contactId,locationId\nc1,L1\n", encoding="utf-8")
    plan = run_cli("run", str(src), "-o", str(tmp_path / "p.parquet"), "--dry-run", token=None)
    lines = plan.stdout.splitlines()
    assert lines[0] == "plan: 1 row"
    assert "requests to send: 1 over 1 location" in lines
    assert f"1 row -> {tmp_path / 'p.parquet'}" in lines
    out = tmp_path / "r.parquet"
    src.write_text("contactId,locationId\nc1,L1\nbad id,L1\n", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    lines = done.stdout.rstrip().splitlines()
    assert any(line.startswith("1 request in ") for line in lines), done.stdout
    assert lines[-1] == (
        f"next: 1 row needs attention: {PROGRAM} report {out} --rows failed,invalid,skipped "
        f"--format csv -o {tmp_path}/r-problems.csv"
    )
    listed = run_cli("report", str(out), "--rows", "invalid")
    assert listed.stdout.splitlines()[-1] == "1 row"


def test_a_fatal_error_is_json_where_json_was_asked_for(tmp_path: Path) -> None:
    """Issue 26: under --log-format json the error is a JSON log line; with --summary json,
    stdout holds a JSON object with the exit code and the error line, not nothing."""
    out = str(tmp_path / "o.parquet")
    done = run_cli("run", "in.csv", "-o", out, "--rate", "5x", "--log-format", "json")
    assert (done.code, done.stdout) == (2, "")
    [line] = done.stderr.splitlines()
    logged = json.loads(line)
    assert logged.pop("timestamp").endswith("Z")
    assert logged == {
        "event": "bad configuration (command line, GHL_* environment): rate (--rate): "
        "expected N/Ts, for example 100/10s (got '5x')",
        "exit_code": 2,
        "level": "error",
    }
    missing = tmp_path / "missing.csv"
    done = run_cli("run", str(missing), "-o", out, "--summary", "json", token=None)
    error = "pipeline: error: no API token: set the environment variable GHL_TOKEN (or use "
    error += "--token-file, --tokens-file or --oauth-file)"
    assert (done.code, done.stderr.splitlines()) == (2, [error])
    assert json.loads(done.stdout) == {"exit_code": 2, "error": error}
    done = run_cli("run", str(missing), "-o", out, env={"GHL_SUMMARY": "json"}, token=None)
    assert json.loads(done.stdout) == {"exit_code": 2, "error": error}
    # Set in a --config file (the [run] table or bare keys), even when the file's other
    # settings are what failed; the command line still decides over the file.
    config = tmp_path / "pipeline.toml"
    config.write_text('[run]\nlog-format = "json"\nsummary = "json"\nrate = "fast"\n')
    done = run_cli("run", str(missing), "-o", out, "--config", str(config))
    assert done.code == 2 and json.loads(done.stdout)["exit_code"] == 2
    assert "expected N/Ts" in json.loads(done.stderr)["event"]
    done = run_cli("run", str(missing), "-o", out, "--config", str(config), "--summary", "none")
    assert done.stdout == "" and json.loads(done.stderr)["level"] == "error"
