"""Stage 4, journal: an append-only record of every sent row's outcome, so a crash loses nothing.

Beside the results file (``results.parquet.journal``), one JSON line per row as it finishes,
flushed and fsynced in small batches at most ``FLUSH_INTERVAL_S`` behind. A ``kill -9`` at
any moment therefore loses at most the last batch: those rows are sent again by
``--resume`` (which keeps only the *settled* outcomes, ``results.settled``), and the API's
"already exists" answer (followed by a search for the id) makes the second send harmless.

The journal is also how outcomes reach the results file: they are streamed to disk as they
come and read back once at the end, so memory does not grow with the number of rows sent.

The first line is a header with a fingerprint of the planned input, so that a journal is
never applied to a different file. A torn last line (the process died mid-write) is
ignored on reading and cut off before appending, so the journal survives any crash.

The journal exists only while a run is unfinished: once the results file is written, it
holds everything the journal did, and the journal is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import polars as pl
import structlog

from pipeline.errors import UsageError
from pipeline.outcomes import RowOutcome
from pipeline.results import OUTCOME_SCHEMA

log = structlog.get_logger("pipeline.journal")

JOURNAL_VERSION = 1
FLUSH_INTERVAL_S = 0.5
MAX_PENDING = 10_000  # records; a burst of skipped rows is flushed before it piles up


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal")


FINGERPRINT_BATCH = 1 << 20  # rows joined into one string at a time


def fingerprint(planned: pl.DataFrame | pl.LazyFrame) -> str:
    """A digest of the rows as planned: the same input file gives the same fingerprint.

    The IDs are fed to the digest a batch at a time, so a plan of any length is digested
    in bounded memory; the bytes digested are the same whatever the batch size."""
    rows = planned.lazy()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(rows.select(pl.len()).collect(engine="streaming").item()).encode())
    for column in ("contact_id", "location_id"):
        digest.update(b"\x1e")
        ids = rows.select(pl.col(column).fill_null("\x00"))
        separator = b""
        for batch in ids.collect_batches(chunk_size=FINGERPRINT_BATCH):
            if batch.height:
                digest.update(separator + batch.to_series().str.join("\x1f").item().encode())
                separator = b"\x1f"
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class JournalContents:
    fingerprint: str
    outcomes: pl.DataFrame  # OUTCOME_SCHEMA, one row per settled row
    valid_bytes: int  # length of the journal up to its last complete line
    torn: bool


def read_journal(path: Path) -> JournalContents:
    """Read a journal, ignoring a torn last line."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    torn = end < len(data)
    lines = data[:end].splitlines()
    if not lines:  # died while writing the header: nothing was sent under this journal
        return JournalContents("", pl.DataFrame(schema=OUTCOME_SCHEMA), 0, torn)
    try:
        header = json.loads(lines[0])
        print_ = header["fingerprint"]
        if header.get("journal") != JOURNAL_VERSION:
            raise ValueError("version")
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a pipeline journal (bad header)") from exc
    header_end = len(lines[0]) + 1
    outcomes = read_records(path, start=header_end, end=end)
    if torn:
        log.warning(
            "journal has a torn last record; ignoring it", path=str(path), bytes=len(data) - end
        )
    return JournalContents(
        fingerprint=str(print_),
        outcomes=outcomes,
        valid_bytes=end,
        torn=torn,
    )


def read_records(path: Path, *, start: int, end: int | None = None) -> pl.DataFrame:
    """The outcomes recorded between two byte offsets, last record per row winning."""
    with path.open("rb") as handle:
        handle.seek(start)
        body = handle.read() if end is None else handle.read(max(0, end - start))
    body = body[: body.rfind(b"\n") + 1]  # never a torn tail
    if not body.strip():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    return _parse_records(body).unique(subset="row_index", keep="last", maintain_order=True)


def _parse_records(body: bytes) -> pl.DataFrame:
    try:
        return pl.read_ndjson(io.BytesIO(body), schema=OUTCOME_SCHEMA)
    except pl.exceptions.PolarsError:
        # Not expected from an append-only, fsynced file; salvage every line that parses.
        records: list[dict[str, Any]] = []
        for line in body.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                log.warning(
                    "skipping unreadable journal line", line=line[:80].decode(errors="replace")
                )
        return pl.DataFrame(records, schema=OUTCOME_SCHEMA)


class JournalWriter:
    """Appends outcomes; ``flush()`` makes them durable (write, flush, fsync)."""

    def __init__(self, path: Path, *, fingerprint: str, resume_at: int | None = None) -> None:
        """A new journal, or (``resume_at``: its valid length) the continuation of one."""
        self.path = path
        self._pending: list[bytes] = []
        self._file: BinaryIO
        self.start_offset: int  # where this run's records begin
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_at:
            self._file = path.open("r+b")
            self._file.truncate(resume_at)  # cut a torn tail before appending
            self._file.seek(resume_at)
            self.start_offset = resume_at
        else:
            self._file = path.open("wb")
            header = {"journal": JOURNAL_VERSION, "fingerprint": fingerprint}
            line = json.dumps(header).encode() + b"\n"
            self._file.write(line)
            self._sync()
            self.start_offset = len(line)

    def add(self, outcome: RowOutcome) -> None:
        record = {
            "row_index": outcome.row_index,
            "status": outcome.status.value,
            "conversation_id": outcome.conversation_id,
            "error_code": outcome.error_code.value if outcome.error_code else None,
            "http_status": outcome.http_status,
            "error_message": outcome.error_message,
            "attempts": outcome.attempts,
        }
        self._pending.append(orjson.dumps(record) + b"\n")
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        if not self._pending or self._file.closed:
            return
        batch, self._pending = self._pending, []
        self._file.write(b"".join(batch))
        self._sync()
        self.written += len(batch)

    async def flush_periodically(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Run alongside sending; cancelled when sending ends."""
        while True:
            await asyncio.sleep(interval_s)
            self.flush()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
