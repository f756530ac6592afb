"""Reading CSV, gzipped CSV and Parquet into the three-column frame; refusing unusable files."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.errors import UsageError
from pipeline.inputs.reading import Columns, normalise_header, read_input


def read(path: Path, **kwargs: object) -> pl.DataFrame:
    return read_input(path, Columns(**kwargs)).collect()  # type: ignore[arg-type]


def test_csv_ids_stay_text_and_are_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "contactId,locationId,Email\n 000123 ,L1,a@b\n,L2,\nabc,  ,x\n", encoding="utf-8"
    )
    frame = read(path)
    assert frame.columns == ["row_index", "contact_id", "location_id"]
    assert frame.schema["row_index"] == pl.Int64
    assert frame.rows() == [(0, "000123", "L1"), (1, None, "L2"), (2, "abc", None)]


def test_gzipped_csv(tmp_path: Path) -> None:
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(b"contact_id,location_id\n007,L\n"))
    assert read(path).rows() == [(0, "007", "L")]


def test_parquet_with_integer_ids_is_cast_to_text(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"CONTACTID": [1, 2], "LocationId": ["L", "M"]}).write_parquet(path)
    assert read(path).rows() == [(0, "1", "L"), (1, "2", "M")]


@pytest.mark.parametrize(
    "header",
    ["contactId", "contact_id", "CONTACTID", "Contact Id", "contact-id", "\ufeffcontactId"],
)
def test_header_spellings(header: str) -> None:
    assert normalise_header(header) == "contactid"


def test_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("who,where\nc,l\n", encoding="utf-8")
    assert read(path, contact_column="who", location_column="where").rows() == [(0, "c", "l")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", b"", "empty"),
        ("in.txt", b"contactId,locationId\n", "unknown file type"),
        ("fake.parquet", b"contactId,locationId\na,b\n", "not a Parquet file"),
        ("cols.csv", b"name,email\na,b\n", "no contactId column; found ['name', 'email']"),
        ("one.csv", b"contactId,email\na,b\n", "no locationId column"),
        ("two.csv", b"contactId,contact_id,locationId\na,b,c\n", "ambiguous contactId column"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        read(path)
    assert str(path) in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        read(tmp_path)


def test_parquet_with_non_text_ids_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"contactId": [1.5], "locationId": ["L"]}).write_parquet(path)
    with pytest.raises(UsageError, match="not text"):
        read(path)
