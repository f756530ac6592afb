"""One run split over the tasks of an array job (``--shard``), then ``pipeline merge``."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.app import merging
from pipeline.core.errors import UsageError
from pipeline.inputs.shards import owner, parse_shard, resolve_shard
from pipeline.sandbox import SandboxThread
from pipeline.send.workers import owner as worker_of
from tests.conftest import run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

LOCATIONS = [f"Loc{k:02d}" for k in range(12)]


def test_a_shard_is_k_of_n() -> None:
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "x/2", "1/0", "3"):
        with pytest.raises(UsageError):
            parse_shard(bad)


@pytest.mark.parametrize(
    ("environ", "count", "expected"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, 4, (2, 4, "Kubernetes Indexed Job")),
        ({"CLOUD_RUN_TASK_INDEX": "1", "CLOUD_RUN_TASK_COUNT": "3"}, None, (1, 3, "Cloud Run")),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "0"}, 2, (0, 2, "AWS Batch")),
        (
            {
                "SLURM_ARRAY_TASK_ID": "11",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_COUNT": "5",
            },
            None,
            (1, 5, "Slurm"),
        ),
    ],
)
def test_the_engines_own_environment_names_the_shard(
    environ: dict[str, str], count: int | None, expected: tuple[int, int, str]
) -> None:
    shard = resolve_shard(None, count, environ)
    assert shard is not None
    assert (shard.index, shard.count) == expected[:2] and expected[2] in shard.source


def test_an_index_without_a_count_says_how_to_give_it() -> None:
    with pytest.raises(UsageError, match="give it with --shard-count N"):
        resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "0"})
    assert resolve_shard(None, None, {}) is None


def test_shards_and_workers_split_independently() -> None:
    locations = [f"loc{k}" for k in range(400)]
    for shard in range(3):
        mine = [loc for loc in locations if owner(loc, 3) == shard]
        assert len(mine) > 100  # about a third each
        assert Counter(worker_of(loc, 2) for loc in mine).keys() == {0, 1}  # both workers busy


def run_shards(sandbox: SandboxThread, src: Path, out: Path, count: int, *extra: str) -> list[Path]:
    for k in range(count):  # as a Kubernetes Indexed Job runs its tasks
        done = run_cli(
            "run", str(src), "-o", str(out), *fast_limits(sandbox), *extra,
            env={"JOB_COMPLETION_INDEX": str(k), "GHL_SHARD_COUNT": str(count)},
        )  # fmt: skip
        assert done.code in (0, 1), done.stderr[-3000:]
        assert '"this task sends one part"' in done.stderr.splitlines()[0]  # the first line
    return [out.with_name(f"{out.stem}.part-{k:05d}-of-{count:05d}.parquet") for k in range(count)]


def test_three_tasks_and_a_merge_account_for_every_row(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(f"c{i}", LOCATIONS[i % 12]) for i in range(360)]
    rows += [("bad id", "Loc01"), ("c9", "bad loc"), ("c0", "Loc00")]  # invalid x2, duplicate
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out" / "results.parquet"
    parts = run_shards(sandbox, src, out, 3)
    for k, part in enumerate(parts):
        frame = pl.read_parquet(part)
        sent = frame.filter(pl.col("status") != "invalid")
        assert set(owner(loc, 3) for loc in sent["location_id"]) <= {k}
        if k:
            assert "invalid" not in set(frame["status"])  # invalid rows are part 0's
    glob = str(tmp_path / "out" / "results.part-*.parquet")
    before = run_cli("report", glob, "--format", "json")  # the parts, read together
    assert before.code == 0 and '"rows": 363' in before.stdout
    merged = tmp_path / "out" / "merged.parquet"
    done = run_cli("merge", glob, "-o", str(merged))
    assert done.code == 0, done.stderr
    results = pl.read_parquet(merged)
    assert results["row_index"].to_list() == list(range(363))
    assert results.select("contact_id", "location_id").rows()[:360] == rows[:360]
    assert Counter(results["status"]) == {"created": 360, "invalid": 2, "duplicate": 1}
    created = sandbox.state.conversations()
    for row in results.filter(pl.col("status") == "created").iter_rows(named=True):
        assert row["conversation_id"] == created[(row["location_id"], row["contact_id"])]
    assert results.filter(pl.col("status") == "duplicate")["conversation_id"].to_list() == [
        created[("Loc00", "c0")]
    ]
    assert "363 rows" in done.stdout
    # A glob that catches the merged file too would count every row twice: refused.
    everything = str(tmp_path / "out" / "*.parquet")
    mixed = run_cli("report", everything)
    assert (mixed.code, mixed.stderr) == (
        2,
        f"pipeline: error: {everything}: {merged} is no part of a split run (--shard); a glob "
        "reads the parts of one run together: report each results file on its own\n",
    )
    # Sorted a range at a time (ranges of 50 rows here, not 500,000): the same file.
    monkeypatch.setattr(merging, "CHUNK_ROWS", 50)
    ranged = tmp_path / "out" / "ranged.parquet"
    merging.merge(glob, str(ranged), state_dir=tmp_path / "state")
    assert pl.read_parquet(ranged).equals(results)
    assert not list((tmp_path / "out").glob(".merge-*"))  # its sorted ranges are gone


def test_merge_refuses_parts_that_do_not_make_one_run(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [(f"c{i}", LOCATIONS[i % 12]) for i in range(120)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "a" / "results.parquet"
    parts = run_shards(sandbox, src, out, 3)
    merged = str(tmp_path / "merged.parquet")

    def merge(spec: Path | str) -> str:
        done = run_cli("merge", str(spec), "-o", merged)
        assert done.code == 2, done.stdout
        return done.stderr

    folder = tmp_path / "a"
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / parts[1].name).unlink()
    assert merge(missing) == f"pipeline: error: {missing}: missing part(s) 1 of 3\n"

    extra = tmp_path / "extra"
    shutil.copytree(folder, extra)
    copy = extra / "again.part-00001-of-00003.parquet"
    shutil.copy(parts[1], copy)
    assert merge(extra) == (
        f"pipeline: error: {extra / parts[1].name} and {copy}: both are part 1 of 3\n"
    )

    other = write_csv(tmp_path / "other.csv", [("z1", "Loc00")])
    foreign = tmp_path / "foreign"
    shutil.copytree(folder, foreign)
    (foreign / parts[0].name).unlink()
    [stray] = run_shards(sandbox, other, tmp_path / "o" / "results.parquet", 1, "--shard", "0/3")[
        :1
    ]
    shutil.copy(stray.with_name("results.part-00000-of-00003.parquet"), foreign / parts[0].name)
    assert merge(foreign).startswith(f"pipeline: error: {foreign / parts[1].name}: a part of ")

    plain = tmp_path / "plain"
    plain.mkdir()
    done = run_cli("run", str(src), "-o", str(plain / "x.part-00000-of-00001.parquet"),
                   *fast_limits(sandbox))  # fmt: skip
    assert done.code == 0
    assert merge(plain) == (
        f"pipeline: error: {plain / 'x.part-00000-of-00001.parquet'}: not a part of a split "
        "run (no --shard in its metadata)\n"
    )


def test_merge_refuses_parts_of_different_counts_and_rows_in_two_parts(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [(f"c{i}", LOCATIONS[i % 12]) for i in range(60)]
    src = write_csv(tmp_path / "in.csv", rows)
    two = run_shards(sandbox, src, tmp_path / "two" / "results.parquet", 2)
    three = run_shards(sandbox, src, tmp_path / "three" / "results.parquet", 3)
    merged = str(tmp_path / "merged.parquet")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(two[0], mixed / two[0].name)
    shutil.copy(three[1], mixed / three[1].name)
    done = run_cli("merge", str(mixed), "-o", merged)
    assert done.code == 2
    assert done.stderr == (
        f"pipeline: error: {mixed / three[1].name}: part 1 of 3, but "
        f"{mixed / two[0].name} is of 2\n"
    )

    # A part whose rows were tampered with: another part's rows inside it.
    overlap = tmp_path / "overlap"
    shutil.copytree(tmp_path / "two", overlap)
    part = overlap / two[1].name
    metadata = pl.read_parquet_metadata(part)
    both = pl.concat([pl.read_parquet(part), pl.read_parquet(two[0]).head(1)])
    both.write_parquet(part, metadata=metadata)
    done = run_cli("merge", str(overlap), "-o", merged)
    assert done.code == 2
    first = int(pl.read_parquet(two[0])["row_index"][0])
    assert done.stderr == f"pipeline: error: {overlap}: row {first} is in more than one part\n"


def test_run_merge_merges_when_the_last_part_is_in_and_says_why_it_cannot(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """``--merge``: the task that finds every part writes OUTPUT; a part of another input
    is named in the log, and the task's own exit code stands (its part is written)."""
    out = tmp_path / "out" / "results.parquet"
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", LOCATIONS[i % 12]) for i in range(48)])
    run_shards(sandbox, src, out, 2, "--merge")
    assert pl.read_parquet(out)["row_index"].to_list() == list(range(48))
    other = write_csv(tmp_path / "other.csv", [(f"d{i}", LOCATIONS[i % 12]) for i in range(30)])
    out.unlink()
    done = run_cli(
        "run", str(other), "-o", str(out), *fast_limits(sandbox), "--merge", "--shard", "0/2",
        "--overwrite",
    )  # fmt: skip
    assert done.code == 0, done.stderr[-3000:]
    assert "the parts cannot be merged" in done.stderr and "another input" in done.stderr
    assert not out.exists()
