"""Stage 1 for Excel: a workbook's sheet as a frame of text, and the plain reasons to refuse one.

People keep contact lists in Excel, and an ``.xlsx`` (or macro-enabled ``.xlsm``) is read as
it is, with polars' Excel reader on the ``calamine`` engine (the ``fastexcel`` package, Rust:
fast, and no Excel needed). Every cell is read as text, as a CSV's are: a number Excel holds
for an ID comes back as ``12345`` (Excel keeps every number as a float, and calamine renders a
whole one as Excel shows it, without ``.0`` or an exponent), and a text cell ``000123`` keeps
its zeros. Excel itself keeps only 15 significant digits of a number, so a longer ID typed as
a number was changed when it was typed; nothing here can bring it back.

The rest of reading is the CSV's (``reading.read_input``): the header is the sheet's first row
that holds a value (calamine skips blank rows and columns before it), header names are
matched the same way, and a row none of whose cells holds anything is not a data row. A
workbook is read whole into memory (calamine has no streaming reader); a sheet holds at most
1,048,576 rows, which fits.

Files named for what they are not are told apart by their first bytes, so that the line a
person reads says what the file is and what to do: an old ``.xls``, a workbook renamed
``.csv``, a ``.xlsx`` that is no workbook.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl

from pipeline.core.errors import UsageError, first_line

EXCEL_SUFFIXES = (".xlsx", ".xlsm")
OLD_EXCEL_SUFFIXES = (".xls",)

ZIP_MAGIC = b"PK\x03\x04"  # an .xlsx is a zip archive of XML parts
# An OLE2 compound file: an old .xls, or (named .xlsx) a password-protected workbook, which
# Excel encrypts into one.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def suffix(path: Path | str) -> str:
    """The file's own suffix as a person would name it (``.csv``, ``.xlsx``), for messages."""
    name = str(path).rsplit("/", 1)[-1].lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else "(no suffix)"


def old_workbook(path: Path | str) -> UsageError:
    """An ``.xls`` is refused rather than guessed at: many files named so are not Excel 97
    workbooks but HTML or tab-separated text that old exporters name ``.xls``, and saving it
    again is one step in Excel that removes the doubt."""
    return UsageError(f"{path}: an old Excel .xls workbook; save it as CSV or .xlsx")


def misnamed_as_text(path: Path, head: bytes) -> UsageError | None:
    """The reason a CSV/TSV file whose first bytes are ``head`` is really a workbook (or an
    archive), or None. A workbook renamed ``.csv`` is a common mistake; left to the CSV
    reader it is only "binary data", which does not say what to do."""
    named = suffix(path)
    if head.startswith(OLE_MAGIC):
        return UsageError(
            f"{path}: an old Excel .xls workbook named {named}; save it as CSV or .xlsx"
        )
    if not head.startswith(ZIP_MAGIC):
        return None
    if _is_workbook_archive(path):
        return UsageError(
            f"{path}: an Excel workbook named {named}; rename it to .xlsx or save it as CSV"
        )
    return UsageError(f"{path}: a zip archive, not CSV text; unzip it first")


def not_a_workbook(path: Path | str) -> UsageError:
    """A file named ``.xlsx`` that calamine cannot open: calamine's own words (``Zip error:
    ... EOCD``) would not tell a person what to do."""
    return UsageError(f"{path}: not an Excel {suffix(path)} workbook; save it as CSV or .xlsx")


def read_workbooks(paths: list[str], sheet: str | None, origin: str | None) -> pl.LazyFrame:
    """The sheet (``--sheet``; the first when None) of each workbook, every cell as text,
    one after another (columns matched by name, as for several CSVs); ``origin``: the
    column that names each row's file, when there are several."""
    frames = [_read_sheet(Path(path), sheet) for path in paths]
    if origin:
        frames = [
            frame.with_columns(pl.lit(path, dtype=pl.String).alias(origin))
            for frame, path in zip(frames, paths, strict=True)
        ]
    return pl.concat(frames, how="diagonal").lazy()


def _read_sheet(path: Path, sheet: str | None) -> pl.DataFrame:
    """One workbook's sheet, or the one line that says why not. The sheet names are asked
    for only when polars does not find ``--sheet`` as given (to match it regardless of
    letter case, or to list them), so the usual read opens the workbook once."""
    _check_signature(path)
    import fastexcel  # polars imports it to read the sheet anyway; not at the module's import

    try:
        try:
            frame = _read(path, sheet)
        except ValueError:  # polars: no sheet of that name (or another reason)
            if sheet is None or (named := _sheet_named(path, sheet)) == sheet:
                raise
            frame = _read(path, named)
    except (fastexcel.FastExcelError, IndexError) as exc:  # calamine's, or no sheet at all
        raise not_a_workbook(path) from exc
    except (ValueError, pl.exceptions.PolarsError) as exc:
        raise UsageError(f"{path}: cannot be read as an Excel workbook: {first_line(exc)}") from exc
    if not frame.width:
        which = f"sheet {sheet!r}" if sheet is not None else "the first sheet"
        hint = "" if sheet is not None else " (name another with --sheet)"
        raise UsageError(f"{path}: {which} is empty{hint}")
    return frame


def _read(path: Path, sheet: str | None) -> pl.DataFrame:
    """One sheet, every column text: ``infer_schema_length=0`` makes calamine write each
    cell as a string (a number as Excel shows it unformatted, a date as ISO text)."""
    return pl.read_excel(
        path,
        sheet_name=sheet,  # None: the first sheet
        engine="calamine",
        infer_schema_length=0,
        drop_empty_rows=False,  # reading.read_input drops them, by the CSV's rule
        raise_if_empty=False,  # an empty sheet is told apart below, with its name
    )


def _sheet_named(path: Path, sheet: str) -> str:
    """The workbook's sheet that ``--sheet`` names: Excel's names are unique regardless of
    letter case, so ``--sheet contacts`` finds ``Contacts``; otherwise one line that lists
    the sheets there are. Asked only when polars did not find the name as given."""
    import fastexcel

    names: list[str] = fastexcel.read_excel(str(path)).sheet_names
    same = [name for name in names if name.casefold() == sheet.casefold()]
    if sheet in names:
        return sheet  # the name was not what polars refused
    if len(same) == 1:
        return same[0]
    shown = ", ".join(repr(name) for name in names)
    raise UsageError(f"{path}: no sheet named {sheet!r}; the workbook has {shown}")


def other_sheets(path: str) -> str:
    """What to add when the first sheet (read without ``--sheet``) lacks the IDs: the
    workbook's other sheets and how to read one; nothing when it has no other."""
    import fastexcel

    first, *others = fastexcel.read_excel(path).sheet_names
    if not others:
        return ""
    shown = ", ".join(repr(name) for name in others)
    return (
        f"; that is the first sheet, {first!r}, and the workbook also has {shown}: "
        f"read one with --sheet {others[0]!r}"
    )


def _check_signature(path: Path) -> None:
    """An ``.xlsx`` is a zip archive: anything else named so is refused before calamine's
    error (``Zip error: ... EOCD``) could reach a person."""
    with path.open("rb") as handle:
        head = handle.read(len(OLE_MAGIC))
    if head.startswith(OLE_MAGIC):
        raise UsageError(
            f"{path}: not an Excel {suffix(path)} workbook (it is password-protected, or an "
            "old .xls renamed); save it as CSV or .xlsx"
        )
    if not head.startswith(ZIP_MAGIC):
        raise not_a_workbook(path)


def _is_workbook_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.startswith("xl/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):  # a torn or odd archive
        return False
