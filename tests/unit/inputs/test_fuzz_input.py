"""Fuzzing the reader and validator: random bytes and random CSV shapes either are refused
with exit 2 and one line, or give a results file with exactly one row per data row."""

from __future__ import annotations

import csv
import gzip
import io
import json
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


# Headers that pass the first gate (a readable header naming both ID columns), in the
# shapes files come in: BOM, CRLF, another separator, extra columns.
HEADERS = [
    b"contactId,locationId\n",
    b"\xef\xbb\xbfcontactId,locationId,Email\r\n",
    b"contact_id;location_id\n",
    b"Contact ID\tLocation ID\tNote\n",
]
# After it: random bytes, in pieces that often look like CSV (separators, quotes, line ends,
# IDs, stray non-UTF-8 bytes). NUL bytes are the gate's (binary data): left out, so every
# example reaches the reader and the validator.
pieces = st.binary(max_size=16) | st.sampled_from(
    [b",", b";", b"\t", b"\n", b"\r\n", b"\r", b'"', b"c1", b"L1", b"\xff\xfe", b"\xef\xbb\xbf"]
)
bodies = st.lists(pieces, max_size=40).map(lambda parts: b"".join(parts).replace(b"\x00", b""))
# What the first gate says: none of it may be the answer to a file with a good header.
FIRST_GATE = ("no contactId column", "no header line", "binary data", "not a readable gzip")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.sampled_from(HEADERS), body=bodies, gz=st.booleans())
def test_random_bytes_never_crash(
    capsys: pytest.CaptureFixture[str], header: bytes, body: bytes, gz: bool
) -> None:
    data = header + body
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / ("in.csv.gz" if gz else "in.csv")
        src.write_bytes(gzip.compress(data) if gz else data)
        code, err, out = run_dry(src, capsys)
        assert code in (0, 1, 2), err  # never an internal error (70)
        assert "Traceback" not in err
        if code == 2:  # under --log-format json the one line is a JSON error event
            events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
            lines = [e["event"] for e in events if e.get("level") == "error"]
            assert len(lines) == 1 and events[-1]["exit_code"] == 2, err
            assert not any(gate in lines[0] for gate in FIRST_GATE), lines[0]
            # Only CSV the parser cannot split (a quote left open) may refuse the file: a
            # stray byte that is not UTF-8 spoils one row, never the file.
            assert b'"' in body, lines[0]
            assert not out.exists()
        else:
            assert out.exists()
            assert pl.read_parquet(out).height <= data.count(b"\n") + data.count(b"\r")


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
