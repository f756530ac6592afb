"""The journal on its own: durable appends, torn tails, resumption."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.outcomes import (
    OUTCOME_COLUMNS,
    RESULT_COLUMNS,
    RESULT_SPEC,
    Code,
    RowOutcome,
    Status,
)
from pipeline.core.schema import OUTCOME_SCHEMA, RESULT_SCHEMA
from pipeline.inputs.resuming import settled
from pipeline.state import journal as journal_module
from pipeline.state.journal import JournalWriter, fingerprint, read_journal, read_records
from pipeline.state.output_files import OutputFiles


def outcome(i: int, status: Status = Status.CREATED, code: Code | None = None) -> RowOutcome:
    return RowOutcome(
        i, status, f"conv{i}" if status is Status.CREATED else None, code, 201, None, 1
    )


def test_every_outcome_is_journalled_and_resume_keeps_the_settled(tmp_path: Path) -> None:
    path = OutputFiles(tmp_path / "r.parquet").journal
    writer = JournalWriter(path, fingerprint="fp")
    writer.add(outcome(0))
    writer.add(outcome(1, Status.FAILED, Code.SERVER_ERROR))  # transient: send again
    writer.add(outcome(2, Status.FAILED, Code.UNPROCESSABLE))  # settled failure
    writer.add(outcome(3, Status.SKIPPED, Code.INTERRUPTED))
    writer.add(outcome(4, Status.EXISTS, Code.CONVERSATION_EXISTS))
    writer.close()
    contents = read_journal(path)
    assert contents.fingerprint == "fp" and not contents.torn
    assert contents.outcomes["row_index"].to_list() == [0, 1, 2, 3, 4]
    kept = settled(contents.outcomes)
    assert kept["row_index"].to_list() == [0, 2, 4]
    assert kept["conversation_id"].to_list() == ["conv0", None, None]


def test_records_of_this_run_only(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = JournalWriter(path, fingerprint="fp")
    first.add(outcome(0, Status.FAILED, Code.TIMEOUT))
    first.close()
    resumed = JournalWriter(path, fingerprint="fp", resume_at=read_journal(path).valid_bytes)
    resumed.add(outcome(0))
    resumed.add(outcome(1))
    resumed.close()
    this_run = read_records(path, start=resumed.start_offset)
    assert this_run["status"].to_list() == ["created", "created"]
    assert read_journal(path).outcomes["status"].to_list() == ["created", "created"]  # last wins


def test_nothing_is_on_disk_before_a_flush_and_everything_after(tmp_path: Path) -> None:
    path = tmp_path / "j"
    writer = JournalWriter(path, fingerprint="fp")
    writer.add(outcome(0))
    assert read_journal(path).outcomes.height == 0
    writer.flush()
    assert read_journal(path).outcomes.height == 1
    writer.close()


def test_a_torn_tail_is_ignored_then_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "j"
    writer = JournalWriter(path, fingerprint="fp")
    writer.add(outcome(0))
    writer.close()
    with path.open("ab") as handle:
        handle.write(b'{"row_index": 1, "sta')
    contents = read_journal(path)
    assert contents.torn and contents.outcomes["row_index"].to_list() == [0]
    resumed = JournalWriter(path, fingerprint="fp", resume_at=contents.valid_bytes)
    resumed.add(outcome(2))
    resumed.close()
    again = read_journal(path)
    assert not again.torn and again.outcomes["row_index"].to_list() == [0, 2]


def test_a_torn_header_means_nothing_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b'{"journal": 1, "finger')
    contents = read_journal(path)
    assert contents.valid_bytes == 0 and contents.outcomes.height == 0
    writer = JournalWriter(path, fingerprint="fp", resume_at=contents.valid_bytes)
    writer.close()
    assert read_journal(path).fingerprint == "fp"


def test_fingerprint_follows_the_rows() -> None:
    a = pl.DataFrame({"contact_id": ["x", None], "location_id": ["L", "L"]})
    b = pl.DataFrame({"contact_id": ["x", ""], "location_id": ["L", "L"]})
    assert fingerprint(a) == fingerprint(a.clone())
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) != fingerprint(a.head(1))


def test_fingerprint_is_the_same_whatever_the_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contacts = [f"c{i}" if i % 7 else None for i in range(50)]
    frame = pl.DataFrame({"contact_id": contacts, "location_id": ["L"] * 50})
    # The bytes digested, spelled out: a journal of an earlier version must still match.
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"50")
    for column in ("contact_id", "location_id"):
        values = ["\x00" if v is None else v for v in frame[column].to_list()]
        digest.update(b"\x1e" + "\x1f".join(values).encode())
    whole = fingerprint(frame)
    assert whole == digest.hexdigest()
    for batch in (1, 3, 49, 50):
        monkeypatch.setattr(journal_module, "FINGERPRINT_BATCH", batch)
        assert fingerprint(frame.lazy()) == whole


def test_the_outcome_schema_is_one_definition() -> None:
    """Every list of columns is derived from RESULT_SPEC; RowOutcome, a dataclass the journal
    writes as it is, is the one that cannot be, so it is held to the spec here."""
    assert tuple(RESULT_SCHEMA) == RESULT_COLUMNS == tuple(c.name for c in RESULT_SPEC)
    assert tuple(OUTCOME_SCHEMA) == OUTCOME_COLUMNS
    assert tuple(f.name for f in dataclasses.fields(RowOutcome)) == OUTCOME_COLUMNS
    assert RESULT_COLUMNS[-1] == "finished_at"  # the newest column stays last


def test_a_journal_record_is_byte_for_byte_what_earlier_versions_wrote(tmp_path: Path) -> None:
    """Journals left by an earlier version are resumed by this one, and the progress bar reads
    the status from the bytes: the record's keys, order and spelling never change (a new
    key comes last, and a record without it reads as null)."""
    path = tmp_path / "j"
    at = datetime(2026, 11, 28, 13, 45, 3, 861272, tzinfo=UTC)
    writer = JournalWriter(path, fingerprint="fp")
    writer.add(RowOutcome(7, Status.FAILED, None, Code.SERVER_ERROR, 503, 'a "b" é', 2, "t-1", at))
    writer.add(RowOutcome(8, Status.CREATED, "conv8", None, 201, None, 1))
    writer.close()
    assert path.read_bytes().decode().splitlines() == [
        json.dumps({"journal": 1, "fingerprint": "fp"}),
        '{"row_index":7,"status":"failed","conversation_id":null,"error_code":"server_error",'
        '"http_status":503,"error_message":"a \\"b\\" é","attempts":2,"trace_id":"t-1",'
        '"finished_at":"2026-11-28T13:45:03.861272+00:00"}',
        '{"row_index":8,"status":"created","conversation_id":"conv8","error_code":null,'
        '"http_status":201,"error_message":null,"attempts":1,"trace_id":null,"finished_at":null}',
    ]
    with path.open("ab") as older:  # a record as the version before finished_at wrote it
        older.write(
            b'{"row_index":9,"status":"created","conversation_id":"c9","error_code":null,'
            b'"http_status":201,"error_message":null,"attempts":1,"trace_id":null}\n'
        )
    outcomes = read_journal(path).outcomes
    assert outcomes.columns == list(OUTCOME_COLUMNS)
    assert outcomes.row(0) == (7, "failed", None, "server_error", 503, 'a "b" é', 2, "t-1", at)
    assert outcomes.row(2)[0] == 9 and outcomes.row(2)[-1] is None


def test_records_read_in_blocks_are_the_same_whatever_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = OutputFiles(tmp_path / "r.parquet").journal
    writer = JournalWriter(path, fingerprint="fp")
    for i in range(40):
        writer.add(outcome(i, Status.FAILED, Code.SERVER_ERROR) if i % 3 else outcome(i))
    writer.add(outcome(1))  # a later record of the same row wins
    writer.close()
    with path.open("ab") as handle:
        handle.write(b'{"row_index": 99, "sta')  # torn tail
    whole = read_journal(path)
    assert whole.torn and whole.outcomes.height == 40
    assert whole.outcomes.filter(pl.col("row_index") == 1)["status"].item() == "created"
    for block in (1, 7, 64, 1000):
        monkeypatch.setattr(journal_module, "READ_BLOCK", block)
        assert read_journal(path).outcomes.equals(whole.outcomes)
