"""Fuzzing the reader and validator: random bytes and random CSV shapes either are refused
with exit 2 and one line, or give a results file with exactly one row per data row."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli.commands import main

# A bare CR inside an unquoted field is ambiguous CSV (Python and polars split it differently).
cells = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=12
) | st.sampled_from(["", " ", "c1", "L1", "000123", '"', ",", "\n", "\r\n", "\ufeff"])


def run_dry(src: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    out = src.with_name("out.parquet")
    with pytest.raises(SystemExit) as info:
        main(["run", str(src), "-o", str(out), "--dry-run", "--log-format", "json"])
    code = info.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err, out


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".parquet", ".csv.gz"]))
def test_random_bytes_never_crash(
    capsys: pytest.CaptureFixture[str], data: bytes, suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"in{suffix}"
        src.write_bytes(data)
        code, err, out = run_dry(src, capsys)
        if code == 2:
            lines = [line for line in err.splitlines() if line.startswith("pipeline: error:")]
            assert len(lines) == 1 and "Traceback" not in err
            assert not out.exists()
        else:
            assert code in (0, 1), err
            assert out.exists()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    extra=st.lists(st.sampled_from(["Email", "Name", "x", ""]), max_size=3),
    rows=st.lists(st.lists(cells, min_size=0, max_size=5), max_size=25),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_random_csv_shapes_give_one_result_per_data_row(
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    rows: list[list[str]],
    crlf: bool,
    bom: bool,
) -> None:
    header = ["contactId", "locationId", *extra]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    text = ("\ufeff" if bom else "") + buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.csv"
        src.write_text(text, encoding="utf-8")
        code, err, out = run_dry(src, capsys)
        if (
            code == 2
        ):  # only a header that polars cannot take (e.g. duplicated names) may be refused
            assert "Traceback" not in err
            assert len(set(header)) < len(header) or "" in header, err
            return
        assert code in (0, 1), err
        results = pl.read_parquet(out)
        # A data row: a line after the header with a non-empty field under some header column
        # (fields past the header's columns are ignored).
        parsed = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))[1:]
        data_rows = [r for r in parsed if any(r[: len(header)])]
        assert results.height == len(data_rows), (results.height, data_rows)
        assert results["row_index"].to_list() == list(range(results.height))
        assert set(results["status"]) <= {"skipped", "duplicate", "invalid"}
