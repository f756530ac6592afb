"""Ids found later: "already exists" while HighLevel's search index lags behind creates.

The rules (``LookupSchedule``) and the queue as units; then the pipeline as a real process
against the sandbox over loopback, with lost answers (a create made, its answer a 502) and
an index that shows a new conversation only seconds later, as the live one does. Every
check holds the results to the sandbox's own record of what exists and of what was asked.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.observe.progress import JournalTail
from pipeline.sandbox import SandboxThread
from pipeline.send.lookups import LookupQueue, LookupSchedule
from pipeline.state.output_files import OutputFiles
from tests.conftest import run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_resilience import assert_all_settled_right, rows_for, start_cli

# -- the schedule ----------------------------------------------------------------------------


def offsets(schedule: LookupSchedule) -> list[float]:
    """When each search is made, in seconds after the "exists" answer."""
    times, searches, since = [0.0], 1, 0.0
    while (delay := schedule.next_delay(searches, since)) is not None:
        searches, since = searches + 1, since + delay
        times.append(round(since, 6))
    return times


def test_the_waits_grow_and_the_last_search_ends_the_wait() -> None:
    assert offsets(LookupSchedule()) == [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75, 61.75, 90]
    assert LookupSchedule().searches_at_most() == 10


def test_no_wait_means_one_search() -> None:
    assert offsets(LookupSchedule(wait_s=0)) == [0]
    assert LookupSchedule(wait_s=0).searches_at_most() == 1


def test_searches_are_capped_whatever_the_wait() -> None:
    long = LookupSchedule(wait_s=3_600, max_searches=12)
    assert len(offsets(long)) == 12
    assert long.next_delay(12, 100) is None


def test_a_row_past_its_wait_is_given_up_even_between_waits() -> None:
    assert LookupSchedule(wait_s=10).next_delay(3, 10.0) is None
    assert LookupSchedule(wait_s=10).next_delay(3, 9.5) == 0.5


# -- the queue -------------------------------------------------------------------------------


def test_the_queue_searches_each_item_when_due_and_drains() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen: list[tuple[str, float]] = []

        async def search(item: str) -> None:
            seen.append((item, round(loop.time() - start, 2)))
            if item == "a" and sum(1 for s, _ in seen if s == "a") < 2:
                queue.add("a", 0.05)  # not found yet: again later

        queue: LookupQueue[str] = LookupQueue(search, clock=loop.time)
        runner = asyncio.create_task(queue.run())
        assert queue.last_due() == 0.0  # none waits
        queue.add("b", 0.02)
        queue.add("a", 0.01)
        assert len(queue) == 2
        assert queue.last_due() == pytest.approx(loop.time() + 0.02, abs=0.005)
        await asyncio.wait_for(queue.drained(), 2)
        runner.cancel()
        assert queue.last_due() == 0.0
        return seen

    seen = asyncio.run(scenario())
    assert [item for item, _ in seen] == ["a", "b", "a"]
    assert seen[2][1] >= 0.06 - 0.005


def test_stop_hands_back_the_waiting_and_cancels_the_searching() -> None:
    async def scenario() -> tuple[list[str], bool]:
        started = asyncio.Event()
        cancelled = False

        async def search(item: str) -> None:
            nonlocal cancelled
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled = True
                raise

        queue: LookupQueue[str] = LookupQueue(search)
        runner = asyncio.create_task(queue.run())
        queue.add("now", 0)
        queue.add("later", 60)
        await started.wait()
        waiting = queue.stop()
        await asyncio.wait_for(queue.drained(), 1)
        queue.add("after", 0)  # a stopped queue takes nothing more
        assert len(queue) == 0
        runner.cancel()
        return waiting, cancelled

    assert asyncio.run(scenario()) == (["later"], True)


# -- progress counts a looked-up row once ---------------------------------------------------


def record(row: int, status: str, code: str | None, conversation: str | None = None) -> str:
    fields = {
        "row_index": row,
        "status": status,
        "conversation_id": conversation,
        "error_code": code,
        "http_status": 400,
        "error_message": "m",
        "attempts": 1,
        "trace_id": None,
        "finished_at": None,
    }
    return json.dumps(fields, separators=(",", ":")) + "\n"


def test_a_row_recorded_before_and_after_its_lookup_counts_once(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    journal.write_text(
        record(0, "created", None, "x") + record(1, "exists", "id_not_found_yet"),
        encoding="utf-8",
    )
    tail = JournalTail([journal], {})
    assert tail.poll() == Counter({"created": 1, "exists": 1})
    with journal.open("a", encoding="utf-8") as handle:
        handle.write(record(2, "created", None, "y") + record(1, "exists", "conversation_exists"))
        handle.write(record(3, "exists", "id_not_found_yet") + record(3, "exists", None, "z"))
    assert tail.poll() == Counter({"created": 2, "exists": 2})


# -- end to end ------------------------------------------------------------------------------


def lossy(sandbox: SandboxThread, *, lag_s: float, lost: float = 0.25, seed: int = 7) -> None:
    """Creates whose answers are lost (made, then a 502) and an index that lags."""
    sandbox.update_config(fault_502_after_create=lost, search_lag_s=lag_s, seed=seed)


def limits_for(
    sandbox: SandboxThread, max_requests: int = 400, interval_ms: int = 500
) -> list[str]:
    """Fast windows, and attempts enough that a quarter of answers lost never fails a row."""
    return [*fast_limits(sandbox, max_requests, interval_ms), "--max-attempts", "12"]


def endpoint_counts(sandbox: SandboxThread, since: int = 0) -> Counter[str]:
    return Counter(f"{r.method} {r.path}" for r in sandbox.state.requests()[since:])


CREATE, SEARCH = "POST /conversations/", "GET /conversations/search"


def test_ids_are_found_when_the_index_lags_past_the_first_searches(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """A 10 s lag, longer than the 6.75 s of searches a row once waited inline: the first
    searches find nothing; the row waits in the lookup queue, and its id is found."""
    lossy(sandbox, lag_s=10.0)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 30))
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *limits_for(sandbox))
    assert done.code == 0, done.stderr[-2000:]
    results = assert_all_settled_right(sandbox, out, 60)
    exists = results.filter(pl.col("status") == "exists")
    assert exists.height > 0
    assert exists["error_code"].to_list() == ["conversation_exists"] * exists.height
    assert endpoint_counts(sandbox)[SEARCH] > exists.height  # searched more than once each


def test_the_eta_waits_for_the_lookups_after_the_last_create(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """Rows waiting for their ids are done in the journal; the run is not: while they wait,
    after the last create, the ETA is the time to the last one's next search, not 0. A
    second run of pairs created a moment ago meets "already exists" for every row, and an
    index that does not show them yet."""
    sandbox.update_config(search_lag_s=5.0)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 30))
    args = ["--progress-interval", "0.2", *limits_for(sandbox)]
    assert run_cli("run", str(src), "-o", str(tmp_path / "first.parquet"), *args).code == 0
    done = run_cli("run", str(src), "-o", str(tmp_path / "again.parquet"), *args)
    assert done.code == 0, done.stderr[-2000:]
    assert pl.read_parquet(tmp_path / "again.parquet")["status"].unique().to_list() == ["exists"]
    events = [json.loads(line) for line in done.stderr.splitlines() if '"progress"' in line]
    waiting = [e for e in events if e["done"] == e["total"] and e["looking_up"]]
    assert waiting, events  # every row done in the journal, their ids still looked up
    assert any(e["eta_s"] >= 0.2 for e in waiting), waiting
    assert all(e["eta_s"] <= 90 for e in waiting)  # never past --lookup-wait


def test_ids_the_index_never_showed_are_found_by_a_retry_with_searches_only(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """The lag outlasts --lookup-wait: those rows end id_not_found_yet (exit 0 by default,
    1 with --fail-on id_not_found_yet); once the index caught up, ``pipeline retry`` fills
    every id without one create."""
    lossy(sandbox, lag_s=600.0)
    src = write_csv(tmp_path / "in.csv", rows_for(2, 30))
    out = tmp_path / "out.parquet"
    limits = limits_for(sandbox)
    done = run_cli(
        "run", str(src), "-o", str(out), "--lookup-wait", "1", "--summary", "json", *limits
    )
    assert done.code == 0, done.stderr[-2000:]
    first = pl.read_parquet(out)
    missing = first.filter(pl.col("error_code") == "id_not_found_yet")
    assert missing.height > 0
    assert missing["status"].unique().to_list() == ["exists"]
    assert missing["conversation_id"].null_count() == missing.height
    assert "looks it up again" in missing["error_message"][0]
    summary = json.loads(done.stdout)
    assert summary["problem_rows"] == missing.height  # needing attention
    assert summary["by_error_code"]["id_not_found_yet"] == missing.height

    strict = run_cli(
        "retry", str(out), "-o", str(tmp_path / "strict.parquet"), "--lookup-wait", "0",
        "--fail-on", "id_not_found_yet", *limits,
    )  # fmt: skip
    assert strict.code == 1, strict.stderr[-2000:]  # still lagging: selected by --fail-on

    sandbox.update_config(search_lag_s=0, fault_502_after_create=0)  # the index caught up
    before = len(sandbox.state.requests())
    retried = tmp_path / "retry.parquet"
    again = run_cli("retry", str(out), "-o", str(retried), *limits)
    assert again.code == 0, again.stderr[-2000:]
    asked = endpoint_counts(sandbox, before)
    assert asked[CREATE] == 0, asked
    assert asked[SEARCH] == missing.height, asked
    assert_all_settled_right(sandbox, retried, 60)


def test_a_crash_while_ids_are_looked_up_resumes_with_searches_only(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """kill -9 while rows wait for their ids: the journal holds them as id_not_found_yet,
    and --resume looks them up (no create for them) and ends every row with its id."""
    lossy(sandbox, lag_s=4.0, lost=0.3, seed=3)
    src = write_csv(tmp_path / "in.csv", rows_for(1, 40))
    out = tmp_path / "out.parquet"
    limits = limits_for(sandbox, 10, 500)  # 20 rows a second: the run lasts a few seconds
    proc = start_cli("run", str(src), "-o", str(out), *limits)
    journal = OutputFiles(out).journal
    wait_until(lambda: journal.exists() and b"id_not_found_yet" in journal.read_bytes(), 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()[1:]]
    last = {r["row_index"]: r for r in records}  # the last record of a row wins
    pending = [i for i, r in last.items() if r["error_code"] == "id_not_found_yet"]
    settled = [i for i, r in last.items() if r["status"] in ("created", "exists")]
    assert pending
    sandbox.update_config(fault_502_after_create=0)
    before = len(sandbox.state.requests())
    done = run_cli("run", str(src), "-o", str(out), "--resume", *limits)
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 40)  # the pending rows too, with the server's id
    asked = endpoint_counts(sandbox, before)
    assert asked[CREATE] == 40 - len(settled), asked  # none for a row known to exist
    assert asked[SEARCH] >= len(pending), asked


@pytest.mark.timing
def test_ctrl_c_during_the_last_lookups_ends_those_rows_without_their_id(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    lossy(sandbox, lag_s=600.0, lost=0.3, seed=5)
    src = write_csv(tmp_path / "in.csv", rows_for(1, 20))
    out = tmp_path / "out.parquet"
    proc = start_cli("run", str(src), "-o", str(out), *limits_for(sandbox))
    journal = OutputFiles(out).journal

    def creates_done() -> bool:
        return journal.exists() and journal.read_bytes().count(b"\n") >= 21  # header + rows

    wait_until(creates_done, 30)
    time.sleep(0.5)  # now only lookups are left: they would go on for --lookup-wait (90 s)
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - asked < 5, err[-2000:]
    assert proc.returncode == 130, err[-2000:]
    results = pl.read_parquet(out)
    assert results.height == 20
    no_id = results.filter(pl.col("conversation_id").is_null())
    assert no_id.height > 0
    assert set(no_id["error_code"]) == {"id_not_found_yet"}
    assert set(no_id["status"]) == {"exists"}


def test_a_known_pair_without_its_id_is_looked_up_never_created(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """Last night's results say the pair's conversation exists, id not found yet: tonight
    the pair is searched for (one GET), not sent (no POST), and ends with its id."""
    limits = limits_for(sandbox)
    seeded = sandbox.seed_conversations([("L0", "old0"), ("L0", "old1")])
    last_night = tmp_path / "known" / "night1.parquet"
    last_night.parent.mkdir()
    pl.DataFrame(
        {
            "row_index": [0, 1],
            "contact_id": ["old0", "old1"],
            "location_id": ["L0", "L0"],
            "status": ["exists", "created"],
            "conversation_id": [None, seeded[("L0", "old1")]],
            "error_code": ["id_not_found_yet", None],
        }
    ).write_parquet(last_night)
    src = write_csv(tmp_path / "in.csv", [("old0", "L0"), ("old1", "L0"), ("new0", "L0")])
    out = tmp_path / "out.parquet"
    before = len(sandbox.state.requests())
    done = run_cli("run", str(src), "-o", str(out), "--known", str(last_night.parent), *limits)
    assert done.code == 0, done.stderr[-2000:]
    asked = endpoint_counts(sandbox, before)
    assert asked == Counter({CREATE: 1, SEARCH: 1}), asked
    results = pl.read_parquet(out)
    assert results["conversation_id"].to_list()[:2] == [
        seeded[("L0", "old0")],
        seeded[("L0", "old1")],
    ]
    assert results["error_code"].to_list()[:2] == ["conversation_exists", "known_from_earlier_run"]


def test_the_plan_shows_the_lookup_wait_and_the_ids_to_look_up(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    lossy(sandbox, lag_s=600.0, lost=0.5)
    src = write_csv(tmp_path / "in.csv", rows_for(1, 10))
    night = tmp_path / "nights" / "1.parquet"
    night.parent.mkdir()
    limits = limits_for(sandbox)
    done = run_cli("run", str(src), "-o", str(night), "--lookup-wait", "0", *limits)
    assert done.code == 0, done.stderr[-2000:]
    missing = pl.read_parquet(night).filter(pl.col("error_code") == "id_not_found_yet").height
    assert missing
    plan = run_cli(
        "run", str(src), "-o", str(tmp_path / "2.parquet"), "--known", str(night.parent),
        "--dry-run", *limits,
    )  # fmt: skip
    assert plan.code == 0, plan.stderr[-2000:]
    assert f"ids to look up: {missing} " in plan.stdout
    assert "requests to send: 0 " in plan.stdout
    assert "looked up for up to 1m30s (--lookup-wait)" in plan.stdout


def test_the_printed_next_step_finds_the_missing_ids_when_pasted(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    from tests.e2e.test_next_steps import run_pasted, summary_lines

    lossy(sandbox, lag_s=600.0, lost=0.4)
    src = write_csv(tmp_path / "in.csv", rows_for(1, 10))
    out = tmp_path / "r.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--lookup-wait", "0", *limits_for(sandbox))
    assert done.code == 0, done.stderr[-2000:]
    lines = summary_lines(done.stdout)
    assert lines[-2].startswith("ids not found yet: ") and "searches only" in lines[-2]
    assert lines[-1].startswith("next: in a few minutes, to find the missing ids: ")
    sandbox.update_config(search_lag_s=0, fault_502_after_create=0)
    before = len(sandbox.state.requests())
    pasted = run_pasted(lines[-1], "missing ids: ")
    assert pasted.code == 0, pasted.stderr[-2000:]
    assert endpoint_counts(sandbox, before)[CREATE] == 0
    assert_all_settled_right(sandbox, tmp_path / "r-retry.parquet", 10)
