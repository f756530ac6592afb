"""What a file argument names (``state/paths.py``): one place for INPUT, --known, PARTS and
RESULTS, so the four read alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.state.paths import is_pattern, named


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ["b.parquet", "a.parquet", "notes.txt", ".hidden.parquet", "c.csv"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.parquet").mkdir()  # a folder named like a file is no file
    return tmp_path


def test_a_folder_names_its_visible_files_of_the_kinds_asked_in_order(folder: Path) -> None:
    found = named(folder, kinds=("*.parquet",))
    assert [Path(p).name for p in found.paths] == ["a.parquet", "b.parquet"]
    assert found.pattern and found.several and not found.remote
    both = named(folder, kinds=("*.parquet", "*.csv"))
    assert [Path(p).name for p in both.paths] == ["a.parquet", "b.parquet", "c.csv"]


def test_a_glob_names_what_the_shell_would_match(folder: Path) -> None:
    found = named(f"{folder}/*.*", kinds=("*.parquet",))
    assert [Path(p).name for p in found.paths] == ["a.parquet", "b.parquet", "c.csv", "notes.txt"]
    assert named(f"{folder}/zz*", kinds=("*.parquet",)).paths == []  # none yet: the caller says


def test_a_plain_path_is_itself_whether_or_not_it_exists(tmp_path: Path) -> None:
    missing = named(tmp_path / "nope.parquet", kinds=("*.parquet",))
    assert missing.paths == [str(tmp_path / "nope.parquet")]
    assert not missing.pattern and not missing.several


def test_a_glob_is_any_of_the_three_characters() -> None:
    assert all(is_pattern(s) for s in ["a*", "a?", "a[12]", "s3://b/x-*/r.parquet"])
    assert not is_pattern("out/results-2026-12-06.parquet")
