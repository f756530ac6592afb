"""A newer attempt takes an object-storage output's checkpoint over while an older one sends.

The older one stops as Ctrl-C stops it and raises ``CheckpointTakenOver``: from Python the
caller's process lives on (no signal to itself, which would kill a notebook's kernel); from
the command line it is one line and exit 75. Either way it writes no results, and the newer
attempt finishes every row from the checkpoint. S3 is moto on loopback (``test_storage``).
The switch that stops the sending is also tried alone, on a ``Sender`` over the in-memory
HighLevel (``fakeapi``) in virtual time.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

import pipeline
from pipeline.core.outcomes import Code, RowOutcome
from pipeline.core.values import Rate
from pipeline.sandbox import SandboxThread
from pipeline.send.backoff import Backoff
from pipeline.send.retrying import RetryPolicy
from pipeline.send.rows import LocationBatch
from pipeline.send.sender import Sender
from pipeline.send.session import StopSwitch
from pipeline.state.checkpoints import Checkpoints
from pipeline.state.output_files import OutputFiles
from tests.conftest import REPO, TOKEN, wait_until
from tests.e2e.test_array_job import aws, keys  # noqa: F401 - the fixture
from tests.e2e.test_storage import BUCKET, s3  # noqa: F401 - the fixture
from tests.fakeapi import FakeHighLevel
from tests.unit.send.test_sender import client_for

# The older attempt: a script that calls the library, says how the call ended, and then
# that its process is still alive (a SIGTERM to itself would have ended it with -15).
OLDER = """
import sys

import polars as pl

import pipeline


def main(token, output, base_url, state_dir, workers, locations):
    rows = pl.DataFrame(
        {
            "contactId": [f"c{i}" for i in range(60)],
            "locationId": [f"L{i % int(locations)}" for i in range(60)],
        }
    )
    try:
        pipeline.create_conversations(
            rows,
            token=token,
            output=output,
            base_url=base_url,
            state_dir=state_dir,
            workers=int(workers),
            checkpoint_interval=0.2,
            log_format="json",
        )
    except pipeline.CheckpointTakenOver as exc:
        print("taken over:", exc, flush=True)
    else:
        print("finished", flush=True)
    print("alive", flush=True)


if __name__ == "__main__":  # workers are spawned: they import this module
    main(*sys.argv[1:])
"""


def rows_of(locations: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "contactId": [f"c{i}" for i in range(60)],
            "locationId": [f"L{i % locations}" for i in range(60)],
        }
    )


def creates(sandbox: SandboxThread) -> int:
    return len([r for r in sandbox.state.requests() if r.method == "POST"])


def take_over_when_copied(
    env: dict[str, str], output: str, elsewhere: Path, older: subprocess.Popen[str]
) -> None:
    """What the engine does to a task on a node cut off: start it again elsewhere, which
    claims the next epoch once the older attempt's checkpoint holds something."""
    folder = output.removeprefix(f"s3://{BUCKET}/").rpartition("/")
    prefix = f"{folder[0]}/.{folder[2]}.checkpoint/"
    wait_until(lambda: any("segment-" in key for key in keys(env, prefix)) or bool(older.poll()))
    if older.poll() is not None:
        stdout, stderr = older.communicate()
        pytest.fail(f"the older attempt ended before the takeover: {stdout}{stderr[-3000:]}")
    assert Checkpoints(OutputFiles.of(output, elsewhere), interval_s=60).claim() == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_takeover_stops_the_call_with_an_exception_and_the_caller_lives_on(
    aws: dict[str, str],  # noqa: F811
    sandbox: SandboxThread,
    tmp_path: Path,
    workers: int,
) -> None:
    sandbox.update_config(rate_max=5, rate_interval_ms=1000)  # 60 rows: at least 6 s
    locations = 2 if workers > 1 else 1  # so that each worker has rows to send
    output = f"s3://{BUCKET}/library-{workers}/results.parquet"
    script = tmp_path / "older.py"
    script.write_text(OLDER, encoding="utf-8")
    older = subprocess.Popen(
        [
            *(sys.executable, str(script), TOKEN, output, sandbox.base_url),
            *(str(tmp_path / "older-node"), str(workers), str(locations)),
        ],
        env={**os.environ, **aws, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    take_over_when_copied(aws, output, tmp_path / "newer-node", older)
    stdout, stderr = older.communicate(timeout=60)

    assert older.returncode == 0, stderr[-3000:]
    assert stdout.splitlines()[-1] == "alive", stderr[-3000:]
    assert "taken over: " in stdout and "(epoch 2) took its checkpoint over" in stdout, stdout
    assert creates(sandbox) < 60  # it stopped sending, well before its rows were done
    assert not [k for k in keys(aws, f"library-{workers}/") if k.endswith("results.parquet")]

    # The newest attempt (here, in this very process) finishes from the checkpoint: every
    # row once, none created twice. Without resume=True it is refused, in Python's words.
    sandbox.update_config(rate_max=100, rate_interval_ms=1000)
    again = {"output": output, "base_url": sandbox.base_url, "log_format": "json"}
    with pytest.raises(pipeline.UsageError, match=r"add resume=True to continue") as refused:
        pipeline.create_conversations(
            rows_of(locations), token=TOKEN, state_dir=tmp_path / "newest-node", **again
        )
    assert "--resume" not in str(refused.value)
    results = pipeline.create_conversations(
        rows_of(locations), token=TOKEN, state_dir=tmp_path / "newest-node", resume=True, **again
    )
    assert results["row_index"].to_list() == list(range(60))
    assert set(results["status"]) <= {"created", "exists"}
    held = sandbox.state.conversations()
    assert len(held) == 60
    assert all(
        held[(r["location_id"], r["contact_id"])] == r["conversation_id"]
        for r in results.iter_rows(named=True)
    )


def test_a_takeover_of_a_command_line_run_with_workers_is_one_line_and_exit_75(
    aws: dict[str, str],  # noqa: F811
    sandbox: SandboxThread,
    tmp_path: Path,
) -> None:
    """The command line stops the same way (no signal to itself either): its workers each
    get the SIGTERM a Ctrl-C would have forwarded, and the run ends in one line, exit 75."""
    sandbox.update_config(rate_max=5, rate_interval_ms=1000)
    source = tmp_path / "input.csv"
    rows_of(2).write_csv(source)
    output = f"s3://{BUCKET}/cli-workers/results.parquet"
    command = [
        *(sys.executable, "-m", "pipeline", "run", str(source), "-o", output, "--workers", "2"),
        *("--checkpoint-interval", "0.2", "--base-url", sandbox.base_url),
        *("--log-file", str(tmp_path / "log.jsonl"), "--summary", "json"),
        *("--state-dir", str(tmp_path / "older-node")),
    ]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    older = subprocess.Popen(
        command,
        env={**environ, **aws, "GHL_TOKEN": TOKEN},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    take_over_when_copied(aws, output, tmp_path / "newer-node", older)
    stdout, stderr = older.communicate(timeout=60)

    assert older.returncode == 75, stderr[-3000:]
    assert stderr.strip().count("\n") == 0, stderr  # the logs are in the file: one line
    assert stderr.startswith("pipeline: error: ") and "(epoch 2) took its checkpoint over" in stderr
    # No summary (no results were written): --summary json's object says the error instead.
    assert json.loads(stdout) == {"exit_code": 75, "error": stderr.strip()}
    assert creates(sandbox) < 60
    assert not [k for k in keys(aws, "cli-workers/") if k.endswith("results.parquet")]


def sender_over(api: FakeHighLevel, sink: Callable[[RowOutcome], None]) -> Sender:
    return Sender(
        client_for(api),
        rate=Rate(10, 1.0),  # 60 rows of one location: 6 s (virtual)
        concurrency=64,
        policy=RetryPolicy(max_attempts=3, backoff=Backoff(base=0.5)),
        sink=sink,
        clock=asyncio.get_running_loop().time,
    )


def one_location(rows: int) -> list[LocationBatch]:
    return [LocationBatch("L1", [(k, f"c{k}") for k in range(rows)])]


@pytest.mark.looptime
async def test_the_switch_stops_a_running_sender_from_another_thread() -> None:
    """The checkpoint thread's call: the sender stops as on Ctrl-C (no new row starts),
    with no signal anywhere."""
    api, outcomes, switch = FakeHighLevel(), [], StopSwitch()

    def record(outcome: RowOutcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 15:  # from another thread, queued before the loop goes on
            asker = threading.Thread(target=switch.stop, kwargs={"detail": "taken over"})
            asker.start()
            asker.join()

    sender = sender_over(api, record)
    with switch.attached(sender):
        await sender.run(one_location(60))
    assert sender.stop_code is Code.INTERRUPTED and sender.stop_detail == "taken over"
    assert 15 <= len(api.requests) < 30  # the rows in flight finished; nothing new started
    switch.stop()  # after the session: nothing to stop, and no error


@pytest.mark.looptime
async def test_a_stop_asked_before_the_sender_runs_sends_nothing() -> None:
    """A takeover seen while the run still plans: the sending stops as it starts."""
    api, outcomes, switch = FakeHighLevel(), [], StopSwitch()
    switch.stop(detail="taken over")
    sender = sender_over(api, outcomes.append)
    with switch.attached(sender):
        await sender.run(one_location(60))
    assert sender.stop_code is Code.INTERRUPTED
    assert not api.requests
