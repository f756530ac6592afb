"""Finding earlier state, in process: which earlier outcomes a run keeps, and which it refuses."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.core.errors import UsageError
from pipeline.core.outcomes import RowOutcome, Status
from pipeline.core.schema import RESULT_SCHEMA
from pipeline.inputs.resuming import find_earlier, outcomes_from_results
from pipeline.state.journal import JournalWriter, fingerprint
from pipeline.state.output_files import OutputFiles

PLANNED = pl.LazyFrame(
    {"row_index": [0, 1, 2], "contact_id": ["a", "b", "c"], "location_id": ["L", "L", "M"]}
)


def results_file(path: Path, statuses: list[str], codes: list[str | None]) -> Path:
    """A results file for PLANNED, as a run would have written it."""
    frame = PLANNED.collect().with_columns(
        status=pl.Series(statuses),
        conversation_id=pl.Series([f"{path.stem}{i}" for i in range(3)]),
        error_code=pl.Series(codes, dtype=pl.String),
        http_status=pl.lit(None),
        error_message=pl.lit(None),
        attempts=pl.lit(1),
        trace_id=pl.lit(None),
        finished_at=pl.lit(None),
    )
    frame.cast(RESULT_SCHEMA).write_parquet(path)  # type: ignore[arg-type]
    return path


def test_nothing_earlier_is_an_empty_state(tmp_path: Path) -> None:
    found = find_earlier(OutputFiles(tmp_path / "o.parquet"), PLANNED, resume=True, retry_from=None)
    assert found.outcomes.height == 0 and found.journal_ends == {}


def test_later_sources_win_and_only_settled_outcomes_count(tmp_path: Path) -> None:
    files = OutputFiles(tmp_path / "o.parquet")
    retried = results_file(tmp_path / "r.parquet", ["created", "failed", "failed"], [None] * 3)
    results_file(files.anchor, ["exists", "failed", "skipped"], [None, "timeout", "interrupted"])
    journal = JournalWriter(files.journal, fingerprint=fingerprint(PLANNED))
    journal.add(RowOutcome(2, Status.CREATED, "j2", None, 201, None, 1))
    journal.close()
    found = find_earlier(files, PLANNED, resume=True, retry_from=retried)
    by_row = dict(zip(found.outcomes["row_index"], found.outcomes["conversation_id"], strict=True))
    # Row 0: the results file being resumed over the one retried; row 1: the retried file's
    # failure without a code is settled, the later timeout is not; row 2: the journal.
    assert by_row == {0: "o0", 1: "r1", 2: "j2"}
    assert found.journal_ends == {files.journal: files.journal.stat().st_size}


def test_a_journal_needs_resume_and_the_same_input(tmp_path: Path) -> None:
    files = OutputFiles(tmp_path / "o.parquet")
    JournalWriter(files.journal, fingerprint="another input").close()
    with pytest.raises(UsageError, match="add --resume"):
        find_earlier(files, PLANNED, resume=False, retry_from=None)
    with pytest.raises(UsageError, match="different input"):
        find_earlier(files, PLANNED, resume=True, retry_from=None)


def test_results_of_another_input_are_refused(tmp_path: Path) -> None:
    path = results_file(tmp_path / "r.parquet", ["created"] * 3, [None] * 3)
    with pytest.raises(UsageError, match="different input"):
        outcomes_from_results(path, PLANNED.head(2))
    moved = PLANNED.with_columns(contact_id=pl.lit("z"))
    with pytest.raises(UsageError, match="different input"):
        outcomes_from_results(path, moved)


def test_results_written_before_trace_id_still_count(tmp_path: Path) -> None:
    path = results_file(tmp_path / "r.parquet", ["created"] * 3, [None] * 3)
    pl.read_parquet(path).drop("trace_id", "finished_at").write_parquet(path)
    kept = outcomes_from_results(path, PLANNED)
    assert kept["row_index"].to_list() == [0, 1, 2] and kept["trace_id"].null_count() == 3
    assert kept["finished_at"].null_count() == 3


def test_a_file_that_is_no_results_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    path.write_text("not parquet", encoding="utf-8")
    with pytest.raises(UsageError, match=r"not a results file \(not Parquet\); give the Parquet"):
        outcomes_from_results(path, PLANNED)


def test_an_unreadable_results_file_with_no_message_is_named_by_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library error with an empty message still makes a one-line UsageError."""

    def refuse(*_args: object, **_kwargs: object) -> pl.LazyFrame:
        raise pl.exceptions.ComputeError("")

    monkeypatch.setattr(pl, "scan_parquet", refuse)
    with pytest.raises(UsageError, match=r"cannot be read as a results file \(ComputeError\)"):
        outcomes_from_results(tmp_path / "r.parquet", PLANNED)
