"""Excel workbooks as input, as a person meets them: the workbook they were sent, run as it
is; a second sheet; a workbook saved under the wrong name; an old ``.xls``.

Each test makes its workbook with xlsxwriter (numbers as numbers, as Excel stores them), runs
the CLI against the sandbox, and checks what the person sees. Runs that send go through a real
subprocess; refusals, which end before anything is sent, run the same ``main`` in process.
"""

from __future__ import annotations

import signal
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import xlsxwriter

from pipeline.cli.commands import main
from pipeline.sandbox import SandboxThread
from tests.conftest import error_lines, run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_resilience import assert_all_settled_right, journal_lines, start_cli

Cell = str | int | float | None
HEADER: list[Cell] = ["Contact ID", "Location ID", "Email"]


def workbook(path: Path, sheets: dict[str, list[list[Cell]]], blank_tail: int = 0) -> Path:
    """A workbook with these sheets, in order; a number is written as an Excel number.
    ``blank_tail``: rows under the first sheet's data that were formatted and left empty,
    as a template leaves them (calamine sees them as rows)."""
    book = xlsxwriter.Workbook(str(path))
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if isinstance(value, int | float):
                    sheet.write_number(r, c, value)
                elif value is not None:
                    sheet.write_string(r, c, value)
        if blank_tail and name == next(iter(sheets)):
            bold = book.add_format({"bold": True})
            for r in range(len(rows), len(rows) + blank_tail):
                sheet.write_blank(r, 0, None, bold)
            sheet.write_string(len(rows) + blank_tail, 1, "")  # an empty text cell
    book.close()
    return path


def refused_with(done_code: int, stderr: str, line: str) -> None:
    assert done_code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr  # the line alone: no log before it
    assert error_lines(stderr) == [f"pipeline: error: {line}"]


def refusal(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The exit code and stderr of ``pipeline ARGS`` run in this process: the same ``main``
    as the command, a second faster (a refusal ends before anything is sent or logged)."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    code = info.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


def test_a_workbook_runs_as_it_is(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = workbook(
        tmp_path / "contacts.xlsx",
        {
            "Contacts": [
                HEADER,
                [12345, "L1", "a@x"],  # an ID Excel holds as a number
                ["000123", "L1", "b@x"],  # a text cell keeps its zeros
                [123456789012345, 42, None],  # 15 digits: no exponent; a numeric location
                [None, None, None],  # a blank row between: not a row
                [" c4 ", "L2", "d@x"],
            ]
        },
        blank_tail=20,
    )
    out = tmp_path / "results.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--keep-columns", "Email", *fast_limits(sandbox)
    )
    assert done.code == 0, done.stderr[-1500:]
    results = pl.read_parquet(out)
    assert results.select("row_index", "contact_id", "location_id", "Email").rows() == [
        (0, "12345", "L1", "a@x"),
        (1, "000123", "L1", "b@x"),
        (2, "123456789012345", "42", None),
        (3, "c4", "L2", "d@x"),
    ]
    assert results["status"].to_list() == ["created"] * 4
    assert set(sandbox.state.conversations()) == {
        ("L1", "12345"),
        ("L1", "000123"),
        ("42", "123456789012345"),
        ("L2", "c4"),
    }


def test_sheet_picks_a_worksheet(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = workbook(
        tmp_path / "book.xlsm",
        {
            "Notes": [["read me first"]],
            "Contacts": [["contactId", "locationId"], ["c1", "L1"], ["c2", "L1"]],
        },
    )
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--sheet", "Contacts", *fast_limits(sandbox))
    assert done.code == 0, done.stderr[-1500:]
    assert pl.read_parquet(out)["contact_id"].to_list() == ["c1", "c2"]
    # Excel's sheet names ignore letter case, and so does --sheet.
    again = tmp_path / "again.parquet"
    done = run_cli("run", str(src), "-o", str(again), "--sheet", "contacts", "--dry-run")
    assert done.code == 0, done.stderr[-1500:]
    assert pl.read_parquet(again)["contact_id"].to_list() == ["c1", "c2"]
    # Without --sheet, the first sheet is read: it has no IDs, and says so, naming the
    # workbook's other sheets and --sheet (issue 26).
    done = run_cli("run", str(src), "-o", str(tmp_path / "x.parquet"), "--dry-run")
    refused_with(
        done.code,
        done.stderr,
        f"{src}: no contactId column; found ['read me first']; accepted names are contactId "
        "or contact_id in any letter case (or name one with --contact-column); that is the "
        "first sheet, 'Notes', and the workbook also has 'Contacts': read one with "
        "--sheet 'Contacts'",
    )


def test_an_unknown_sheet_names_the_sheets_there_are(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = workbook(tmp_path / "book.xlsx", {"Contacts": [HEADER], "Archive 2023": [HEADER]})
    out = str(tmp_path / "o.parquet")
    code, stderr = refusal(capsys, "run", str(src), "-o", out, "--sheet", "Sheet1", "--dry-run")
    refused_with(
        code, stderr, f"{src}: no sheet named 'Sheet1'; the workbook has 'Contacts', 'Archive 2023'"
    )


def test_sheet_on_a_csv_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    out = str(tmp_path / "o.parquet")
    code, stderr = refusal(capsys, "run", str(src), "-o", out, "--sheet", "Contacts", "--dry-run")
    refused_with(
        code, stderr, f"{src}: --sheet is for an Excel workbook (.xlsx, .xlsm); this input is CSV"
    )


def test_an_empty_sheet_says_which(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = workbook(tmp_path / "book.xlsx", {"Blank": [], "Contacts": [HEADER]})
    code, stderr = refusal(capsys, "run", str(src), "-o", str(tmp_path / "o.parquet"), "--dry-run")
    refused_with(code, stderr, f"{src}: the first sheet is empty (name another with --sheet)")


def _zip_of_a_csv(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("contacts.csv", "contactId,locationId\nc1,L1\n")
    return path


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        (
            "old.xls",
            lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)),
            "an old Excel .xls workbook; save it as CSV or .xlsx",
        ),
        (
            "export.csv",
            lambda p: workbook(p, {"S": [HEADER, ["c1", "L1", "e"]]}),
            "an Excel workbook named .csv; rename it to .xlsx or save it as CSV",
        ),
        (
            "export.tsv",
            lambda p: workbook(p, {"S": [HEADER]}),
            "an Excel workbook named .tsv; rename it to .xlsx or save it as CSV",
        ),
        ("archive.csv", _zip_of_a_csv, "a zip archive, not CSV text; unzip it first"),
        (
            "old-renamed.csv",
            lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)),
            "an old Excel .xls workbook named .csv; save it as CSV or .xlsx",
        ),
        (
            "text.xlsx",
            lambda p: p.write_text("contactId,locationId\nc1,L1\n", encoding="utf-8"),
            "not an Excel .xlsx workbook; save it as CSV or .xlsx",
        ),
        (
            "archive.xlsx",
            _zip_of_a_csv,
            "not an Excel .xlsx workbook; save it as CSV or .xlsx",
        ),
        (
            "locked.xlsx",
            lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)),
            "not an Excel .xlsx workbook (it is password-protected, or an old .xls renamed); "
            "save it as CSV or .xlsx",
        ),
    ],
)
def test_a_file_that_is_not_what_its_name_says(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    make: Callable[[Path], object],
    problem: str,
) -> None:
    src = tmp_path / name
    make(src)
    out = tmp_path / "o.parquet"
    code, stderr = refusal(capsys, "run", str(src), "-o", str(out), "--dry-run")
    assert "Traceback" not in stderr
    refused_with(code, stderr, f"{src}: {problem}")
    assert not out.exists()


def test_a_mislabelled_workbook_is_refused_by_the_command_too(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = workbook(tmp_path / "export.csv", {"S": [HEADER, ["c1", "L1", "e"]]})
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    refused_with(
        done.code,
        done.stderr,
        f"{src}: an Excel workbook named .csv; rename it to .xlsx or save it as CSV",
    )
    assert sandbox.state.requests() == [] and not out.exists()


def test_dry_run_check_and_retry_of_a_workbook(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = workbook(
        tmp_path / "in.xlsx",
        {"S": [["contact_id", "location_id"], [1, "L1"], [1, "L1"], ["bad id", "L2"]]},
    )
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--dry-run", token=None)
    assert done.code == 1  # one invalid row
    results = pl.read_parquet(out)
    assert results.select("contact_id", "status").rows() == [
        ("1", "skipped"),
        ("1", "duplicate"),
        ("bad id", "invalid"),
    ]
    done = run_cli("check", str(src), "--base-url", sandbox.base_url)
    assert done.code == 0, done.stderr[-1500:]
    searched = {r.location_id for r in sandbox.state.requests()}
    assert searched == {"L1"} and not sandbox.state.conversations()
    # The dry run's results are retried as any run's: the skipped row is sent now.
    again = tmp_path / "again.parquet"
    done = run_cli("retry", str(out), "-o", str(again), *fast_limits(sandbox))
    assert done.code == 1, done.stderr[-1500:]  # the invalid row is still invalid
    assert pl.read_parquet(again)["status"].to_list() == ["created", "duplicate", "invalid"]
    assert set(sandbox.state.conversations()) == {("L1", "1")}


def test_resume_an_interrupted_workbook_run(sandbox: SandboxThread, tmp_path: Path) -> None:
    rows: list[list[Cell]] = [[10_000 + i, f"L{i % 2}"] for i in range(60)]
    src = workbook(tmp_path / "in.xlsx", {"S": [["contactId", "locationId"], *rows]})
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox, 10, 500)]
    proc = start_cli(*args)
    wait_until(lambda: journal_lines(out) >= 10, timeout=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and journal_lines(out) > 1
    done = run_cli(*args, "--resume")  # the journal belongs to this workbook: continued
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 60)
    assert results["contact_id"].to_list() == [str(10_000 + i) for i in range(60)]
    posts = len([r for r in sandbox.state.requests() if r.method == "POST"])
    # A complete run resumed sends nothing again, and writes the same results.
    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    assert len([r for r in sandbox.state.requests() if r.method == "POST"]) == posts
    kept = ["row_index", "contact_id", "status", "conversation_id"]
    assert pl.read_parquet(out).select(kept).equals(results.select(kept))
