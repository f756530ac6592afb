"""The job as a Python call: a DataFrame in, the results DataFrame out, sync and async."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import polars as pl
import pytest

import pipeline
from pipeline.sandbox import SandboxThread
from tests.conftest import TOKEN
from tests.test_end_to_end import fast_limits


def frame(locations: int, per_location: int) -> pl.DataFrame:
    rows = [(f"c{i}x{j}", f"L{j}") for i in range(per_location) for j in range(locations)]
    return pl.DataFrame(rows, schema=["contactId", "locationId"], orient="row")


def options(sandbox: SandboxThread) -> dict[str, str]:
    fast_limits(sandbox)  # shrink the sandbox's window; the run follows what it announces
    return {"base_url": sandbox.base_url, "log_format": "json"}


def test_a_frame_in_results_out(sandbox: SandboxThread) -> None:
    rows = frame(3, 20)
    before = signal.getsignal(signal.SIGINT)
    results = pipeline.create_conversations(rows, token=TOKEN, **options(sandbox))
    assert signal.getsignal(signal.SIGINT) is before  # no handler installed, none left behind
    assert results["status"].to_list() == ["created"] * 60
    assert results["contact_id"].to_list() == rows["contactId"].to_list()
    held = sandbox.state.conversations()
    assert all(
        held[(r["location_id"], r["contact_id"])] == r["conversation_id"]
        for r in results.iter_rows(named=True)
    )


def test_an_output_is_written_and_resumable(sandbox: SandboxThread, tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    first = pipeline.create_conversations(frame(2, 5), token=TOKEN, output=out, **options(sandbox))
    assert pl.read_parquet(out).equals(first)
    with pytest.raises(pipeline.UsageError, match="the output exists"):
        pipeline.create_conversations(frame(2, 5), token=TOKEN, output=out, **options(sandbox))
    again = pipeline.create_conversations(
        frame(2, 5), token=TOKEN, output=out, resume=True, **options(sandbox)
    )
    assert again["conversation_id"].to_list() == first["conversation_id"].to_list()


async def test_the_async_form_leaves_the_callers_loop_free(sandbox: SandboxThread) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    results = await pipeline.create_conversations_async(
        frame(2, 60), token=TOKEN, **options(sandbox)
    )
    ticker.cancel()
    assert results["status"].to_list() == ["created"] * 120
    assert ticks > 20  # the loop kept serving while the job ran (two windows of 0.5 s)


def test_bad_options_and_rows_are_usage_errors(sandbox: SandboxThread) -> None:
    with pytest.raises(pipeline.UsageError, match="unknown option"):
        pipeline.create_conversations(frame(1, 1), token=TOKEN, colour="red")
    with pytest.raises(pipeline.UsageError, match="rate"):
        pipeline.create_conversations(frame(1, 1), token=TOKEN, rate="lots")
    with pytest.raises(pipeline.UsageError, match="no contactId column"):
        pipeline.create_conversations(
            pl.DataFrame({"email": ["a@b"]}), token=TOKEN, **options(sandbox)
        )
    with pytest.raises(pipeline.UsageError, match="no API token"):
        pipeline.create_conversations(frame(1, 1))
