"""The generated inputs: even per-location files, large files with invalid and duplicate
rows, and a HighLevel-style contacts export written a chunk at a time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl


def location_id(k: int) -> str:
    """``loc0001`` for k = 0."""
    return f"loc{k + 1:04d}"


def even_frame(locations: int, rows_per_location: int, prefix: str = "c") -> pl.DataFrame:
    """Every location with the same number of rows, interleaved; contacts all distinct."""
    import polars as pl

    n = locations * rows_per_location
    i = pl.int_range(0, n, dtype=pl.Int64)
    return pl.select(
        contactId=pl.lit(prefix) + i.cast(pl.String).str.zfill(9),
        locationId=pl.lit("loc") + (i % locations + 1).cast(pl.String).str.zfill(4),
    )


def scale_frame(rows: int, locations: int, *, start: int = 0) -> pl.DataFrame:
    """``rows`` rows over ``locations``: ~1% invalid (half bad contact, half empty location)
    and ~1% duplicates of a row 50 earlier. Contact ids are hash-like, ~20 characters, and
    rows come in no particular location order, so neither file format compresses unfairly."""
    import polars as pl

    i = pl.int_range(start, start + rows, dtype=pl.Int64)

    def contact(k: pl.Expr) -> pl.Expr:
        return pl.lit("c") + k.hash(seed=7).cast(pl.String)

    def location(k: pl.Expr) -> pl.Expr:
        k = k.hash(seed=11) % locations + 1
        return pl.lit("loc") + k.cast(pl.String).str.zfill(4)

    duplicate = (i % 100 == 71) & (i >= 100)
    return pl.select(
        contactId=pl.when(duplicate)
        .then(contact(i - 50))
        .when(i % 200 == 37)
        .then(pl.lit("bad id ") + i.cast(pl.String))
        .otherwise(contact(i)),
        locationId=pl.when(duplicate)
        .then(location(i - 50))
        .when(i % 200 == 137)
        .then(pl.lit(""))
        .otherwise(location(i)),
    )


EXPORT_TEXT_COLUMNS = (
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "Company Name",
    "Address",
    "City",
    "Tags",
    "Source",
    "Notes",
)


def write_export_csv(path: Path, rows: int, locations: int, chunk: int = 1_000_000) -> Path:
    """A HighLevel-style contacts export of ``rows`` rows: ``Contact Id``, ``Location Id``
    and ten text columns, about 330 bytes a row. The rows follow ``scale_frame`` (about 1%
    invalid, 1% duplicates). Written a chunk at a time, so a file of any size can be made
    without holding it in memory."""
    import polars as pl

    with path.open("wb") as handle:
        for start in range(0, rows, chunk):
            ids = scale_frame(min(chunk, rows - start), locations, start=start)
            k = pl.int_range(start, start + ids.height, dtype=pl.Int64)
            text = [
                (pl.lit(f"{name.lower()} ") + k.hash(seed=n).cast(pl.String)).alias(name)
                for n, name in enumerate(EXPORT_TEXT_COLUMNS)
            ]
            frame = ids.rename({"contactId": "Contact Id", "locationId": "Location Id"})
            frame.with_columns(text).write_csv(handle, include_header=start == 0)
    return path


def write_frame(frame: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def result_statuses(path: Path) -> dict[str, int]:
    """Rows of a results file by status."""
    import polars as pl

    counts = pl.read_parquet(path, columns=["status"])["status"].value_counts()
    return {str(s): int(n) for s, n in counts.iter_rows()}
