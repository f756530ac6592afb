"""Scheduled runs over a growing export: each night sends only what is new (``--known``).

Four nights, as cron would run them with dated outputs: night 1 sends a 1,000-row export;
night 2's export holds those rows (reordered, as a re-export would) plus 200 new ones and
sends only the 200; night 3 meets a spent daily quota; night 4 finishes the rest. Every
night's results account for every row of its input, with the right ids, and the sandbox's
request log proves what was sent.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl

from pipeline.sandbox import SandboxThread
from tests.conftest import error_lines, run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

LOCATIONS = [f"Loc{k}" for k in range(5)]
RESERVE = 20  # --daily-reserve's default


def export(count: int, seed: int) -> list[tuple[str, str]]:
    """The first ``count`` contacts of the sub-accounts, in an export's shuffled order."""
    rows = [(f"contact{i:05d}", LOCATIONS[i % len(LOCATIONS)]) for i in range(count)]
    random.Random(seed).shuffle(rows)
    return rows


def creates(sandbox: SandboxThread, since: int) -> int:
    """Conversations the sandbox created after its ``since``-th request."""
    return sum(1 for r in sandbox.state.requests(since) if r.method == "POST" and r.status == 201)


def night(
    sandbox: SandboxThread, folder: Path, name: str, rows: list[tuple[str, str]]
) -> tuple[int, pl.DataFrame]:
    src = write_csv(folder / f"export-{name}.csv", rows)
    out = folder / "results" / f"contacts-{name}.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--resume",
        "--known", str(folder / "results" / "contacts-*.parquet"),
        *fast_limits(sandbox, 100, 200),
    )  # fmt: skip
    results = pl.read_parquet(out)
    assert results.height == len(rows), done.stderr  # every row of the input, once
    assert results.select("contact_id", "location_id").rows() == rows  # in input order
    return done.code, results


def assert_right_ids(sandbox: SandboxThread, results: pl.DataFrame) -> None:
    created = sandbox.state.conversations()
    done = results.filter(pl.col("status").is_in(["created", "exists"]))
    for row in done.iter_rows(named=True):
        assert row["conversation_id"] == created[(row["location_id"], row["contact_id"])], row


def test_four_nights_send_only_what_is_new(sandbox: SandboxThread, tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    code, first = night(sandbox, tmp_path, "2026-11-25", export(1000, seed=1))
    assert code == 0 and set(first["status"]) == {"created"}
    assert creates(sandbox, 0) == 1000

    seen = len(sandbox.state.requests())
    code, second = night(sandbox, tmp_path, "2026-11-26", export(1200, seed=2))
    assert code == 0
    assert creates(sandbox, seen) == 200  # only the new contacts were sent
    assert len(sandbox.state.requests(seen)) == 200  # and nothing else asked: no searches
    known = second.filter(pl.col("error_code") == "known_from_earlier_run")
    assert known.height == 1000 and set(known["status"]) == {"exists"}
    assert set(known["attempts"]) == {0} and known["finished_at"].null_count() == 1000
    assert second.filter(pl.col("status") == "created").height == 200
    assert_right_ids(sandbox, second)

    # Night 3: the export grows by 500, but each location has only 40 requests left today.
    used = 1200 // len(LOCATIONS)
    sandbox.update_config(daily_limit=used + 40)
    seen = len(sandbox.state.requests())
    code, third = night(sandbox, tmp_path, "2026-11-27", export(1700, seed=3))
    assert code == 1
    fits = 40 - RESERVE  # what is left today, less the reserve kept for searches and retries
    assert creates(sandbox, seen) == fits * len(LOCATIONS)
    assert not [r for r in sandbox.state.requests(seen) if r.status == 429]  # none refused
    waiting = third.filter(pl.col("error_code") == "daily_quota_exhausted")
    assert waiting.height == 500 - fits * len(LOCATIONS)
    assert set(waiting["status"]) == {"skipped"}
    assert_right_ids(sandbox, third)

    # Night 4: the day turned; the same export sends exactly the rows that waited.
    sandbox.update_config(daily_limit=100_000)
    seen = len(sandbox.state.requests())
    code, fourth = night(sandbox, tmp_path, "2026-11-28", export(1700, seed=4))
    assert code == 0
    assert creates(sandbox, seen) == waiting.height
    assert set(fourth["status"]) == {"created", "exists"}
    assert fourth.filter(pl.col("status") == "created").height == waiting.height
    assert_right_ids(sandbox, fourth)
    assert len(sandbox.state.conversations()) == 1700  # each contact created exactly once


def test_pairs_that_failed_earlier_are_sent_again(sandbox: SandboxThread, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.parquet"
    rows = [("c1", "L1"), ("c2", "L1"), ("c3", "L2")]
    pl.DataFrame(
        {
            "row_index": [0, 1, 2],
            "contact_id": ["c1", "c2", "c3"],
            "location_id": ["L1", "L1", "L2"],
            "status": ["created", "failed", "skipped"],
            "conversation_id": ["conv-c1", None, None],
            "Email": ["a@x", "b@x", "c@x"],  # a kept column of that run; other runs differ
        }
    ).write_parquet(earlier)  # an older version's results: no trace_id, no finished_at
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "r.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--known", str(earlier), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    results = pl.read_parquet(out)
    assert results.select("status", "conversation_id", "error_code").rows()[0] == (
        "exists",
        "conv-c1",
        "known_from_earlier_run",
    )
    assert results["status"].to_list()[1:] == ["created", "created"]
    assert creates(sandbox, 0) == 2


def test_a_dry_run_counts_only_what_is_new(tmp_path: Path) -> None:
    earlier = tmp_path / "results"
    earlier.mkdir()
    pl.DataFrame(
        {"contact_id": ["c1"], "location_id": ["L1"], "conversation_id": ["conv-c1"]}
    ).write_parquet(earlier / "night1.parquet")
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L1")])
    done = run_cli(
        "run", str(src), "-o", str(tmp_path / "plan.parquet"), "--dry-run",
        "--known", str(earlier), token=None,
    )  # fmt: skip
    assert "requests to send: 1 over 1 location" in done.stdout.splitlines(), done.stdout


def test_a_missing_known_file_is_one_line_and_an_empty_folder_knows_nothing(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    out = str(tmp_path / "r.parquet")
    typo = folder / "night1.parquet"
    done = run_cli("run", str(src), "-o", out, "--known", str(typo), *fast_limits(sandbox))
    assert done.code == 2
    assert error_lines(done.stderr) == [f"pipeline: error: --known {typo}: no such file or folder"]
    for first_night in (str(folder), str(folder / "*.parquet")):  # nothing there yet
        done = run_cli(
            "run", str(src), "-o", out, "--overwrite", "--known", first_night,
            *fast_limits(sandbox),
        )  # fmt: skip
        assert done.code == 0, done.stderr


def test_an_input_file_given_as_known_is_refused(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    other = tmp_path / "input.parquet"
    pl.DataFrame({"contactId": ["c1"], "locationId": ["L1"]}).write_parquet(other)
    done = run_cli("run", str(src), "-o", str(tmp_path / "r.parquet"), "--known", str(other))
    assert done.code == 2
    assert done.stderr.startswith(f"pipeline: error: --known {other}: not a results file (no ")
