"""Stage 1, read the input: CSV (optionally gzipped), Parquet or an Excel workbook, through polars.

The output of this stage is a LazyFrame with exactly three columns, whatever the file looked
like: ``row_index`` (Int64, 0-based among data rows: in a CSV, every line after the header
with a non-empty field under one of the header's columns; in a workbook's sheet, every row
after the header with a non-empty cell), ``contact_id`` and ``location_id`` (String, trimmed,
null where absent or blank). IDs are always text: an ID column is never type-inferred, so
``000123`` stays ``000123`` (and an ID Excel holds as a number reads ``12345``: ``excel.py``).

Everything that makes a file unusable is found here and raised as one ``UsageError`` that
names the file and the problem, before anything is sent.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.core.errors import UsageError, first_line
from pipeline.core.outcomes import RESULT_COLUMNS
from pipeline.inputs import excel
from pipeline.state.paths import is_pattern, named

if TYPE_CHECKING:  # the options model; imported only for its type
    from pipeline.app.config import RunConfig

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
TSV_SUFFIXES = (".tsv", ".tsv.gz")
# The separators a header is sniffed for, in the order that breaks a tie.
SEPARATORS = (",", ";", "\t", "|")
PARQUET_SUFFIXES = (".parquet", ".pq")
KIND_NAMES = {"csv": "CSV", "parquet": "Parquet", "excel": "Excel"}

# Header names are compared after dropping case, spaces, underscores and hyphens, so that
# contactId, contact_id, CONTACT-ID and "Contact Id" all name the same column.
CONTACT_KEY = "contactid"
LOCATION_KEY = "locationid"

SNIFF_BYTES = 64 * 1024
_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise_header(name: str) -> str:
    return _SEPARATORS.sub("", name.lstrip("\ufeff")).lower()


def input_format(path: Path | str) -> str:
    name = str(path).rsplit("/", 1)[-1].lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(excel.EXCEL_SUFFIXES):
        return "excel"
    if name.endswith(excel.OLD_EXCEL_SUFFIXES):
        raise excel.old_workbook(path)
    known = CSV_SUFFIXES + PARQUET_SUFFIXES + excel.EXCEL_SUFFIXES
    raise UsageError(f"{path}: unknown file type; expected one of {', '.join(known)}")


@dataclass(frozen=True, slots=True)
class Sources:
    """What one INPUT argument names: a file, several (a glob, a folder of parts), or a URI."""

    spec: str
    paths: list[str]  # local files in sorted order, or the URI (with its glob) as given
    fmt: str
    remote: bool

    @property
    def several(self) -> bool:
        """Rows then carry a ``source_file`` column; ``row_index`` runs across files."""
        return len(self.paths) > 1 or is_pattern(self.spec)


def resolve_sources(spec: str | Path) -> Sources:
    found = named(spec, kinds=_READABLE, list_remote=False)
    text = found.spec
    if found.remote:
        return Sources(text, found.paths, input_format(text), remote=True)
    if found.pattern and not found.paths:
        if Path(text).is_dir():
            raise UsageError(f"{text}: is a directory with no .csv, .csv.gz or .parquet files")
        raise UsageError(f"{text}: no files match")
    kinds = {input_format(p) for p in found.paths}
    if len(kinds) > 1:
        if Path(text).is_dir():
            raise UsageError(f"{text}: the folder mixes CSV and Parquet files; give one kind")
        names = sorted(KIND_NAMES[kind] for kind in kinds)
        listed = f"{', '.join(names[:-1])} and {names[-1]}"
        raise UsageError(f"{text}: matches {listed} files; give one kind")
    return Sources(text, found.paths, kinds.pop(), remote=False)


_READABLE = tuple(f"*{suffix}" for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Columns:
    """Which columns to read, and what to do when the file has no location column."""

    contact_column: str | None = None  # --contact-column
    location_column: str | None = None  # --location-column
    location_id: str | None = None  # --location-id: one location for every row
    override_location: bool = False  # --override-location: even if the file has a column
    keep_columns: tuple[str, ...] = ()  # --keep-columns: carried into the results as they are

    @classmethod
    def of(cls, config: RunConfig) -> Columns:
        """From the options (``--keep-columns`` is comma-separated)."""
        keep = tuple(
            name.strip() for name in (config.keep_columns or "").split(",") if name.strip()
        )
        return cls(
            config.contact_column,
            config.location_column,
            config.location_id,
            config.override_location,
            keep,
        )


RESERVED = frozenset({*RESULT_COLUMNS, "source_file"})


def sniff_separator(header: str) -> str:
    """The separator of a CSV header line: the candidate seen most often outside quotes
    (comma on a tie or when none is), so a European spreadsheet's ``;`` export reads."""
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(SEPARATORS, key=lambda sep: counts[sep])  # the first of equals wins
    return best if counts[best] else ","


def read_input(
    spec: str | Path,
    columns: Columns = Columns(),
    separator: str | None = None,
    sheet: str | None = None,
) -> pl.LazyFrame:
    """Open the input lazily and return the frame described above (plus any kept columns,
    and ``source_file`` when the input is several files). ``separator``: the CSV's, when
    given (``--separator``); else a ``.tsv`` is tab-separated, and a CSV's is sniffed from
    its header line. ``sheet``: a workbook's sheet to read (``--sheet``; else its first)."""
    sources = resolve_sources(spec)
    _check_sheet_option(sources, sheet)
    heads: list[bytes] = []
    for local in [] if sources.remote else sources.paths:
        _check_readable(Path(local))
        if sources.fmt == "csv":
            heads.append(_check_text(Path(local)))
        elif sources.fmt == "parquet":
            _check_parquet_magic(Path(local))
    if separator is None and sources.fmt == "csv":
        if sources.paths[0].lower().endswith(TSV_SUFFIXES):
            separator = "\t"
        elif heads:
            header = heads[0].lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
            separator = sniff_separator(header.decode("utf-8", errors="replace"))
    origin = "source_file" if sources.several else None
    target: str | list[str] = sources.paths[0] if sources.remote else sources.paths
    if sources.fmt == "csv":
        lf = pl.scan_csv(
            target,
            separator=separator or ",",
            infer_schema=False,  # every column is text: IDs keep their leading zeros
            encoding="utf8-lossy",  # a stray non-UTF-8 byte spoils one row, not the file
            truncate_ragged_lines=True,
            missing_columns="insert",
            include_file_paths=origin,
        )
        lf = _drop_blank_rows(lf, origin)
    elif sources.fmt == "excel":
        lf = _drop_blank_rows(excel.read_workbooks(sources.paths, sheet, origin), origin)
    else:
        lf = pl.scan_parquet(target, include_file_paths=origin, missing_columns="insert")
    label = sources.spec
    schema = _schema(lf, label)
    names = [n for n in schema if n != origin]
    try:
        contact = _resolve(label, names, CONTACT_KEY, columns.contact_column, "--contact-column")
        _check_id_dtype(label, contact, schema[contact])
        location_expr = _location(label, names, schema, columns)
    except _NoColumn as exc:  # a workbook's first sheet may be notes, the IDs on another
        if sources.fmt != "excel" or sheet is not None or len(sources.paths) > 1:
            raise
        raise UsageError(f"{exc}{excel.other_sheets(sources.paths[0])}") from None
    for name in columns.keep_columns:
        if name not in names:
            raise UsageError(
                f"{label}: --keep-columns {name!r} is not a column; found {_list(names)}"
            )
        if name in RESERVED:
            raise UsageError(
                f"--keep-columns {name!r}: the results already have a column of that name"
            )
    # with_row_index streams; an int_range over pl.len() would hold the whole file first.
    return (
        lf.select(
            _clean_id(contact).alias("contact_id"),
            location_expr.alias("location_id"),
            *(pl.col(name) for name in columns.keep_columns),
            *([pl.col(origin)] if origin else []),
        )
        .with_row_index("row_index")
        .with_columns(pl.col("row_index").cast(pl.Int64))
    )


def _check_sheet_option(sources: Sources, sheet: str | None) -> None:
    """``--sheet`` names a worksheet; on any other input it was given by mistake (or meant
    for another file), and ignoring it would read something the person did not ask for.
    A workbook is read from a local file: calamine reads no object storage."""
    if sources.fmt != "excel":
        if sheet is not None:
            raise UsageError(
                f"{sources.spec}: --sheet is for an Excel workbook (.xlsx, .xlsm); "
                f"this input is {KIND_NAMES[sources.fmt]}"
            )
        return
    if sources.remote:
        raise UsageError(
            f"{sources.spec}: an Excel workbook is read from a local file; download it first"
        )


def _drop_blank_rows(lf: pl.LazyFrame, origin: str | None) -> pl.LazyFrame:
    """A blank line (or a line of only separators; in a sheet, a row of empty cells) is not
    a data row: it carries no instruction, and exports often end with one (a sheet, with
    rows that were formatted and never filled)."""
    fields = pl.all().exclude(origin) if origin else pl.all()
    return lf.filter(pl.any_horizontal(fields.fill_null("").str.len_bytes() > 0))


def _location(path: str, names: list[str], schema: pl.Schema, columns: Columns) -> pl.Expr:
    """The location of each row: from its column, or the one --location-id names."""
    found = [n for n in names if normalise_header(n) == LOCATION_KEY]
    if columns.location_id is not None:
        if (found or columns.location_column) and not columns.override_location:
            raise UsageError(
                f"{path}: the file has a location column "
                f"({(columns.location_column or found[0])!r}) "
                "and --location-id was given; drop one, or add --override-location"
            )
        return pl.lit(columns.location_id.strip() or None, dtype=pl.String)
    if not found and columns.location_column is None:
        raise _NoColumn(
            f"{path}: no locationId column; found {_list(names)}; accepted names are locationId or "
            "location_id in any letter case (name one with --location-column, or give every row "
            "one location with --location-id)"
        )
    location = _resolve(path, names, LOCATION_KEY, columns.location_column, "--location-column")
    _check_id_dtype(path, location, schema[location])
    return _clean_id(location)


def _clean_id(column: str) -> pl.Expr:
    text = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_bytes() > 0).then(text).otherwise(None)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a file")
    try:
        with path.open("rb") as handle:
            first = handle.read(1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not first:
        raise UsageError(f"{path}: the file is empty")


def _check_text(path: Path) -> bytes:
    """Refuse binary data dressed as CSV, and gzip that is not gzip, with a plain reason;
    return the file's first bytes (its header is sniffed for the separator)."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        else:
            with path.open("rb") as handle:
                head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"{path}: not a readable gzip file ({exc})") from exc
    misnamed = None if path.name.lower().endswith(".gz") else excel.misnamed_as_text(path, head)
    if misnamed is not None:
        raise misnamed
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise UsageError(f"{path}: the file has no header line (it is empty or blank)")
    if b"\x00" in head:
        raise UsageError(f"{path}: binary data, not CSV text (it holds NUL bytes)")
    return head


def _check_parquet_magic(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PAR1":
        raise UsageError(
            f"{path}: not a Parquet file (it does not start with the Parquet magic bytes)"
        )


def _schema(lf: pl.LazyFrame, path: str) -> pl.Schema:
    try:
        return lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(
            f"{path}: cannot be read as {input_format(path)}: {first_line(exc)}"
        ) from exc


class _NoColumn(UsageError):
    """The input has no column for an ID the rows need."""


def _resolve(path: str, columns: list[str], key: str, explicit: str | None, option: str) -> str:
    if explicit is not None:
        if explicit not in columns:
            raise UsageError(
                f"{path}: {option} {explicit!r} is not a column; found {_list(columns)}"
            )
        return explicit
    matches = [name for name in columns if normalise_header(name) == key]
    label = "contactId" if key == CONTACT_KEY else "locationId"
    if not matches:
        raise _NoColumn(
            f"{path}: no {label} column; found {_list(columns)}; accepted names are "
            f"{label} or {_snake(label)} in any letter case (or name one with {option})"
        )
    if len(matches) > 1:
        raise UsageError(
            f"{path}: ambiguous {label} column: {_list(matches)} all match; name one with {option}"
        )
    return matches[0]


def _check_id_dtype(path: str, name: str, dtype: pl.DataType) -> None:
    if dtype == pl.String or dtype == pl.Categorical or dtype.is_integer() or dtype == pl.Null:
        return
    raise UsageError(f"{path}: column {name!r} holds {dtype}, not text; IDs must be strings")


def _snake(label: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", label).lower()


def _list(names: list[str]) -> str:
    shown = ", ".join(repr(n if len(n) <= 40 else n[:40] + "...") for n in names[:12])
    more = f" and {len(names) - 12} more" if len(names) > 12 else ""
    return f"[{shown}{more}]" if names else "no columns"
