"""The files around an output: their names, to the letter.

Every other test names these files through ``OutputFiles``; this one holds the names
themselves, since a later version must find the journal, lock and state an earlier one left.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.state.output_files import OutputFiles, state_anchor


def test_the_files_beside_a_local_output(tmp_path: Path) -> None:
    files = OutputFiles.of(str(tmp_path / "out" / "results.parquet"), tmp_path / "unused")
    folder = tmp_path / "out"
    assert files.uri is None and files.folder == folder
    assert files.results == files.anchor == folder / "results.parquet"
    assert files.journal == folder / "results.parquet.journal"
    assert files.journals(1) == [folder / "results.parquet.journal"]
    assert files.journals(3) == [folder / f"results.parquet.journal.w{k}" for k in range(3)]
    assert files.lock == folder / ".results.parquet.lock"
    assert files.stage == folder / ".results.parquet.stage"
    assert files.results_temp(4242) == folder / ".results.parquet.4242.tmp"


def test_a_remote_output_keeps_its_state_in_the_state_folder(tmp_path: Path) -> None:
    uri = "s3://bucket/results/run-1.parquet"
    files = OutputFiles.of(uri, tmp_path / "state")
    assert files.uri == uri and files.results == uri
    assert files.anchor == tmp_path / "state" / "a78da6b98f42-run-1.parquet"
    assert files.folder == tmp_path / "state"
    assert files.journal == tmp_path / "state" / "a78da6b98f42-run-1.parquet.journal"
    assert files.lock == tmp_path / "state" / ".a78da6b98f42-run-1.parquet.lock"
    assert state_anchor("s3://bucket/results/", Path("s")) == Path("s/6d28dd18c9c6-results")
    other = OutputFiles.of("s3://other/results/run-1.parquet", tmp_path / "state")
    assert other.anchor != files.anchor  # same name, another output: other state


def test_existing_journals_are_those_of_any_worker_count(tmp_path: Path) -> None:
    files = OutputFiles(tmp_path / "out.parquet")
    for path in [*files.journals(1), *files.journals(2), files.anchor, files.lock]:
        path.write_text("x", encoding="utf-8")
    (tmp_path / "other.parquet.journal").write_text("x", encoding="utf-8")
    assert files.existing_journals() == [files.journal, *files.journals(2)]


def test_worker_files_live_beside_the_output_while_in_use(tmp_path: Path) -> None:
    files = OutputFiles(tmp_path / "out.parquet")
    with files.worker_files() as shared:
        assert shared.folder.parent == tmp_path and shared.folder.name.startswith(".pipeline-")
        assert shared.rows(1) == shared.folder / "rows-1.parquet"
        assert shared.report(1) == shared.folder / "report-1.json"
    assert not shared.folder.exists()
