"""Real-world inputs: HighLevel's own exports, tolerant column names, one-location files,
columns carried through to the results."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.core.errors import UsageError
from pipeline.inputs.reading import Columns, read_input
from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, run_cli
from tests.e2e.test_end_to_end import fast_limits

LOC = "tDtDnQdgm2LXpyiqYvZ6"


@pytest.mark.parametrize(
    "header",
    [
        "Contact Id,Location Id",
        "contact_id,location_id",
        "CONTACT-ID,LOCATION-ID",
        "contactId,locationId",
        "contactid , LocationID",
    ],
)
def test_header_spellings_all_match(tmp_path: Path, header: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"{header},Email\nc1,L1,a@b\n", encoding="utf-8")
    assert read_input(path).collect().rows() == [(0, "c1", "L1")]


def test_an_ambiguous_match_names_both(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("Contact Id,contact_id,locationId\na,b,c\n", encoding="utf-8")
    with pytest.raises(UsageError, match="'Contact Id', 'contact_id'"):
        read_input(path)


def test_keep_columns_are_carried_into_the_results(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "Contact Id,Location Id,Email,First Name\nc1,L1,a@x.com,Ana\nc1,L1,b@x.com,Ben\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--keep-columns",
        "Email, First Name",
        *fast_limits(sandbox),
    )
    assert done.code == 0, done.stderr
    results = pl.read_parquet(out)
    assert results.columns[-2:] == ["Email", "First Name"]
    assert results.select("status", "Email", "First Name").rows() == [
        ("created", "a@x.com", "Ana"),
        ("duplicate", "b@x.com", "Ben"),
    ]
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--overwrite",
        "--keep-columns",
        "Phone",
        *fast_limits(sandbox),
    )
    assert done.code == 2 and "--keep-columns 'Phone' is not a column" in done.stderr
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--overwrite",
        "--keep-columns",
        "status",
        *fast_limits(sandbox),
    )
    assert done.code == 2


def test_the_bundled_export_with_one_location(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = REPO / "data" / "contacts_export.csv"
    out = tmp_path / "acme.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--location-id",
        LOC,
        "--keep-columns",
        "Email,First Name",
        *fast_limits(sandbox, 400, 500),
    )
    assert done.code == 1, done.stderr  # the export has blank and mangled ids
    results = pl.read_parquet(out)
    export = pl.read_csv(src, infer_schema=False)
    assert results.height == export.height == 300
    assert set(results["location_id"]) == {LOC}
    assert results["Email"].to_list() == export["Email"].to_list()
    codes = results["error_code"].value_counts()
    assert set(results["status"]) == {"created", "invalid"}
    assert set(codes["error_code"].drop_nulls()) == {"missing_contact_id", "invalid_contact_id"}
    created = sandbox.state.conversations()
    assert (
        all(loc == LOC for loc, _ in created)
        and len(created) == (results["status"] == "created").sum()
    )


def test_location_id_is_refused_when_the_file_has_a_location_column(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc1,L1\n", encoding="utf-8")
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--location-id", LOC, *fast_limits(sandbox))
    assert (
        done.code == 2
        and "has a location column ('locationId')" in done.stderr
        and "--override-location" in done.stderr
    )
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--location-id",
        LOC,
        "--override-location",
        *fast_limits(sandbox),
    )
    assert done.code == 0, done.stderr
    assert set(sandbox.state.conversations()) == {(LOC, "c1")}


def test_missing_location_column_suggests_location_id(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("Contact Id,Email\nc1,a@b\n", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), "--dry-run", token=None)
    assert done.code == 2 and "--location-id" in done.stderr
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "o.parquet"),
        "--dry-run",
        "--location-id",
        "bad/id",
        token=None,
    )
    assert done.code == 2 and "--location-id 'bad/id': not a valid location id" in done.stderr


def test_columns_named_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("who,where\nc,l\n", encoding="utf-8")
    assert read_input(
        path, Columns(contact_column="who", location_column="where")
    ).collect().rows() == [(0, "c", "l")]
