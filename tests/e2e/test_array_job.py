"""An array job on this machine, as an engine runs one: N processes told their index by the
engine's variables, no shared local folder, input and outputs on S3 (moto on loopback, at
a plain http:// endpoint, configured only by the variables deploy/README.md names), one
task killed with SIGKILL mid-run and started again with an empty working folder, and the
parts merged by the last task to finish (``--merge``), and again by hand (``pipeline
merge``). Also the checkpoint's pieces against the same S3: epochs, fencing, segments,
taking up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from bisect import bisect_right
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.core.outcomes import RowOutcome, Status
from pipeline.sandbox import SandboxThread
from pipeline.state.checkpoints import Checkpoints, Superseded
from pipeline.state.journal import JournalWriter, read_journal
from pipeline.state.output_files import OutputFiles
from tests.conftest import TOKEN, run_cli, wait_until
from tests.e2e.test_storage import BUCKET, boto3_client, s3  # noqa: F401 - the fixture

TASKS = 4
RATE_MAX, RATE_MS = 10, 1000


def keys(env: dict[str, str], prefix: str) -> list[str]:
    listed = boto3_client(env).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def busiest(times: list[float], interval: float) -> int:
    times = sorted(times)
    return max(bisect_right(times, t) - bisect_right(times, t - interval) for t in times)


@pytest.fixture
def aws(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # noqa: F811
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    return s3


def task(
    k: int,
    work: Path,
    env: dict[str, str],
    sandbox: SandboxThread,
    source: str,
    output: str,
    count: int = TASKS,
) -> subprocess.Popen[str]:
    """Task ``k`` as Kubernetes starts it: its index in JOB_COMPLETION_INDEX, the count in
    GHL_SHARD_COUNT, a working folder of its own, the same command for every task."""
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "pipeline", "run", source, "-o", output),
            *("--resume", "--merge", "--checkpoint-interval", "0.3"),
            *("--base-url", sandbox.base_url, "--log-format", "json", "--summary", "json"),
        ],
        cwd=work,
        env={
            **env,
            "GHL_TOKEN": TOKEN,
            "PATH": "/usr/bin:/bin",
            "JOB_COMPLETION_INDEX": str(k),
            "GHL_SHARD_COUNT": str(count),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_array_job_with_a_task_killed_and_restarted_elsewhere_ends_every_row_right(
    aws: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    env = aws
    sandbox.update_config(rate_max=RATE_MAX, rate_interval_ms=RATE_MS)
    rows = [(f"c{i:04d}", f"L{i % 16:02d}") for i in range(640)]  # 40 rows per location
    local = tmp_path / "input.csv"
    local.write_text("contactId,locationId\n" + "".join(f"{c},{loc}\n" for c, loc in rows))
    boto3_client(env).upload_file(str(local), BUCKET, "imports/input.csv")
    source = f"s3://{BUCKET}/imports/input.csv"
    output = f"s3://{BUCKET}/runs/job-1/results.parquet"
    victim = 1
    checkpoint = f"runs/job-1/.results.part-{victim:05d}-of-{TASKS:05d}.parquet.checkpoint/"

    procs = {k: task(k, tmp_path / f"node-{k}", env, sandbox, source, output) for k in range(TASKS)}
    # Kill the victim mid-run, once its checkpoint holds some of what it sent.
    wait_until(lambda: len([key for key in keys(env, checkpoint) if "segment-" in key]) >= 2)
    assert procs[victim].poll() is None, procs[victim].communicate()[1][-3000:]
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].communicate(timeout=10)
    # Started again "on another node": an empty working folder, the same command.
    procs[victim] = task(victim, tmp_path / "node-new", env, sandbox, source, output)
    logs = {}
    for k, proc in procs.items():
        _, logs[k] = proc.communicate(timeout=180)
        assert proc.returncode == 0, (k, logs[k][-3000:])
    events = [json.loads(line) for line in logs[victim].splitlines() if line.startswith("{")]
    assert events[0]["event"] == "this task sends one part"  # the log's first line says which
    assert events[0]["shard"] == f"{victim}/{TASKS}"
    took = [e for e in events if e["event"] == "took up the checkpoint"]
    assert took and took[0]["records"] > 0, [e["event"] for e in events]
    assert [e["epoch"] for e in events if e["event"] == "checkpoint epoch claimed"] == [2]
    merged = [k for k in procs if "merged the parts" in logs[k]]
    assert merged  # the last task to finish wrote the results

    results = pl.read_parquet(output)
    assert results["row_index"].to_list() == list(range(640))
    assert set(results["status"]) <= {"created", "exists"}
    made = sandbox.state.conversations()
    assert len(made) == 640  # each pair created once, none twice
    got = dict(
        zip(
            zip(results["location_id"], results["contact_id"], strict=True),
            results["conversation_id"],
            strict=True,
        )
    )
    assert got == made  # the right id for every row, the resent ones too
    took_up = results.filter(pl.col("status") == "exists").height
    assert took_up < 100  # only what was sent after the last checkpoint went again
    # No location ever saw more than its limit, counted by the server.
    by_location: dict[str, list[float]] = defaultdict(list)
    for request in sandbox.state.requests():
        if request.location_id is not None and request.status != 429:
            by_location[request.location_id].append(request.t)
    assert max(busiest(times, RATE_MS / 1000) for times in by_location.values()) <= RATE_MAX
    # The checkpoints are gone with the parts' journals; the parts and the merge stay.
    left = keys(env, "runs/job-1/")
    assert not [key for key in left if ".checkpoint/" in key], left
    assert f"runs/job-1/results.part-00003-of-{TASKS:05d}.parquet" in left
    # Merged by hand as deploy/README.md shows, into another file: the same rows.
    by_hand = f"s3://{BUCKET}/runs/job-1/by-hand.parquet"
    parts = f"s3://{BUCKET}/runs/job-1/results.part-*-of-{TASKS:05d}.parquet"
    done = run_cli("merge", parts, "-o", by_hand, env=env)
    assert done.code == 0, done.stderr
    assert pl.read_parquet(by_hand).equals(results)


# -- the pieces -------------------------------------------------------------------------------


def files_for(tmp_path: Path, name: str) -> OutputFiles:
    return OutputFiles.of(f"s3://{BUCKET}/pieces/{name}.parquet", tmp_path / "state")


def outcome(k: int) -> RowOutcome:
    return RowOutcome(k, Status.CREATED, f"conv{k}", None, 201, None, 1)


def test_segments_carry_only_what_is_new_and_are_taken_up_on_an_empty_disk(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    files = files_for(tmp_path / "a", "new-bytes")
    first = Checkpoints(files, interval_s=60)
    assert first.claim() == 1
    journal = JournalWriter(files.journal, fingerprint="f" * 32)
    for k in range(3):
        journal.add(outcome(k))
    journal.flush()
    sent = first.upload()
    assert sent == files.journal.stat().st_size and first.segments == 1
    assert first.upload() == 0  # nothing new: no request to write
    journal.add(outcome(3))
    journal.flush()
    assert first.upload() < sent  # the new line only, never the whole journal again
    journal.close()

    again = Checkpoints(files_for(tmp_path / "b", "new-bytes"), interval_s=60)  # another disk
    assert again.claim() == 2
    assert again.restore() == 4
    contents = read_journal(again.files.journal)
    assert contents.fingerprint == "f" * 32
    assert contents.outcomes["row_index"].to_list() == [0, 1, 2, 3]
    assert again.upload() == 0  # what it took up is not copied back


def test_an_older_attempt_is_fenced_off_once_a_newer_one_claims(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    files = files_for(tmp_path / "old", "fenced")
    old = Checkpoints(files, interval_s=60)
    old.claim()
    new = Checkpoints(files_for(tmp_path / "new", "fenced"), interval_s=60)
    new.claim()
    journal = JournalWriter(files.journal, fingerprint="f" * 32)
    journal.add(outcome(0))
    journal.close()
    with pytest.raises(Superseded, match="newer attempt"):
        old.upload()
    assert old.superseded
    new.check_fence()  # the newest goes on
    new.clear()
    assert not keys(aws, "pieces/.fenced.parquet.checkpoint/")


def test_a_stale_attempts_late_segment_does_no_harm(aws: dict[str, Any], tmp_path: Path) -> None:
    """Segments of every epoch are taken up, records in epoch order after one header."""
    files = files_for(tmp_path / "x", "late")
    one = Checkpoints(files, interval_s=60)
    one.claim()
    journal = JournalWriter(files.journal, fingerprint="f" * 32)
    journal.add(outcome(0))
    journal.close()
    one.upload()
    two = Checkpoints(files_for(tmp_path / "y", "late"), interval_s=60)
    two.claim()
    two.restore()
    writer = JournalWriter(
        two.files.journal, fingerprint="f" * 32, resume_at=two.files.journal.stat().st_size
    )
    writer.add(outcome(1))
    writer.close()
    two.upload()
    three = Checkpoints(files_for(tmp_path / "z", "late"), interval_s=60)
    three.claim()
    assert three.restore() == 2
    assert read_journal(three.files.journal).outcomes["row_index"].to_list() == [0, 1]


def test_merge_lists_parts_in_object_storage(s3: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    done = run_cli(
        "merge",
        f"s3://{BUCKET}/nothing-here/results.part-*.parquet",
        "-o",
        str(tmp_path / "m.parquet"),
        env=s3,
    )
    assert done.code == 2 and "no parts there" in done.stderr


def test_merge_without_a_shard_is_refused_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc1,L1\n")
    done = run_cli("run", str(src), "-o", str(tmp_path / "r.parquet"), "--merge", "--dry-run")
    assert done.code == 2
    assert done.stderr.strip().count("\n") == 0 and "--merge" in done.stderr


def test_an_attempt_that_a_newer_one_took_over_stops_without_writing_its_part(
    aws: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    """A node cut off from the cluster keeps its pod running while the engine starts the
    index again elsewhere: the old attempt sees the newer claim at its next copy, stops
    sending, and leaves the part to the newer attempt."""
    sandbox.update_config(rate_max=5, rate_interval_ms=1000)
    source = tmp_path / "input.csv"
    source.write_text("contactId,locationId\n" + "".join(f"c{i},L1\n" for i in range(60)))
    output = f"s3://{BUCKET}/runs/job-2/results.parquet"
    old = task(0, tmp_path / "old-node", aws, sandbox, str(source), output, count=1)
    part = f"s3://{BUCKET}/runs/job-2/results.part-00000-of-00001.parquet"
    folder = "runs/job-2/.results.part-00000-of-00001.parquet.checkpoint/"
    wait_until(lambda: any("segment-" in key for key in keys(aws, folder)))
    newer = Checkpoints(OutputFiles.of(part, tmp_path / "new-node"), interval_s=60)
    assert newer.claim() == 2
    _, stderr = old.communicate(timeout=60)
    assert old.returncode == 75, stderr[-3000:]  # another attempt writes this output
    assert "a newer attempt of this task (epoch 2) took its checkpoint over" in stderr
    assert not [key for key in keys(aws, "runs/job-2/") if "results.part" in key.split("/")[-1]]
    sent = len([r for r in sandbox.state.requests() if r.location_id == "L1"])
    assert sent < 60  # it stopped sending, well before its rows were done


def test_a_journal_left_on_this_disk_is_kept_and_copied_whole(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    """Started again on the same machine: the local journal is the fuller copy; its first
    copy carries all of it, since the crash may have come before the last copy."""
    files = files_for(tmp_path, "same-disk")
    journal = JournalWriter(files.journal, fingerprint="f" * 32)
    journal.add(outcome(0))
    journal.close()
    again = Checkpoints(files, interval_s=60)
    again.claim()
    assert again.restore() == 0
    assert again.upload() == files.journal.stat().st_size
    elsewhere = Checkpoints(files_for(tmp_path / "other", "same-disk"), interval_s=60)
    elsewhere.claim()
    assert elsewhere.restore() == 1


def test_a_folder_in_a_bucket_names_its_results_not_the_checkpoints_beside_them(
    aws: dict[str, str], tmp_path: Path
) -> None:
    """``--known s3://bucket/runs/`` and ``pipeline merge s3://bucket/runs/job/``: a task's
    checkpoint folder lies beside its part, and is neither a part nor earlier results."""
    client = boto3_client(aws)
    known = pl.DataFrame(
        {
            "location_id": ["L1"],
            "contact_id": ["c1"],
            "status": ["created"],
            "conversation_id": ["conv-1"],
        }
    )
    local = tmp_path / "night.parquet"
    known.write_parquet(local)
    client.upload_file(str(local), BUCKET, "nights/n1/results.part-00000-of-00001.parquet")
    for key in (
        "nights/n1/.results.part-00000-of-00001.parquet.checkpoint/segments/segment-x.parquet",
        "nights/n1/.results.part-00000-of-00001.parquet.checkpoint/epochs/epoch-000001",
        "nights/n1/notes.txt",
    ):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"not results")
    from pipeline.app.merging import part_paths
    from pipeline.inputs.known import known_paths

    part = f"s3://{BUCKET}/nights/n1/results.part-00000-of-00001.parquet"
    assert known_paths(f"s3://{BUCKET}/nights/") == [part]
    assert known_paths(f"s3://{BUCKET}/no-nights-yet/") == []  # the first night
    assert part_paths(f"s3://{BUCKET}/nights/n1/") == [part]
    src = tmp_path / "in.csv"
    src.write_text("contactId,locationId\nc1,L1\nc2,L1\n")
    done = run_cli(
        "run", str(src), "-o", str(tmp_path / "r.parquet"), "--dry-run",
        "--known", f"s3://{BUCKET}/nights/", env=aws,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    results = pl.read_parquet(tmp_path / "r.parquet")
    assert results["error_code"].to_list() == ["known_from_earlier_run", "dry_run"]


def test_a_run_with_workers_checkpoints_each_workers_journal_and_takes_them_up(
    aws: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    """``--workers 2`` writes two journals: both are copied, and a run started again on an
    empty disk rebuilds both and resumes."""
    sandbox.update_config(rate_max=RATE_MAX, rate_interval_ms=RATE_MS)
    source = tmp_path / "input.csv"
    source.write_text("contactId,locationId\n" + "".join(f"c{i},L{i % 8}\n" for i in range(320)))
    output = f"s3://{BUCKET}/runs/workers/results.parquet"
    folder = "runs/workers/.results.parquet.checkpoint/segments/"

    def start(work: Path) -> subprocess.Popen[str]:
        work.mkdir()
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "pipeline", "run", str(source), "-o", output),
                *("--resume", "--workers", "2", "--checkpoint-interval", "0.3"),
                *("--base-url", sandbox.base_url, "--log-format", "json"),
            ],
            cwd=work,
            env={**aws, "GHL_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def segments() -> list[str]:
        return [key.rsplit("-", 1)[1] for key in keys(aws, folder)]

    first = start(tmp_path / "one")
    # Mid-run: each worker's journal copied at least twice (its header, then records).
    wait_until(lambda: all(segments().count(f"journal.w{k}") >= 2 for k in (0, 1)))
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    again = start(tmp_path / "two")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr[-3000:]
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    took = [e["records"] for e in events if e["event"] == "took up the checkpoint"]
    assert took and took[0] > 0, [e["event"] for e in events]
    results = pl.read_parquet(output)
    assert results["row_index"].to_list() == list(range(320))
    assert set(results["status"]) <= {"created", "exists"}
    made = sandbox.state.conversations()
    assert len(made) == 320
    for row in results.iter_rows(named=True):
        assert row["conversation_id"] == made[(row["location_id"], row["contact_id"])]


def test_a_checkpoint_left_by_a_killed_run_is_taken_up_only_with_resume(
    aws: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(rate_max=5, rate_interval_ms=1000)
    source = tmp_path / "input.csv"
    source.write_text("contactId,locationId\n" + "".join(f"c{i},L1\n" for i in range(40)))
    output = f"s3://{BUCKET}/runs/again/results.parquet"
    args = ["run", str(source), "-o", output, "--checkpoint-interval", "0.3"]
    killed = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args, "--base-url", sandbox.base_url],
        cwd=tmp_path,
        env={**aws, "GHL_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = "runs/again/.results.parquet.checkpoint/segments/"
    wait_until(lambda: len(keys(aws, folder)) >= 2)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**aws, "GHL_STATE_DIR": str(elsewhere)}
    done = run_cli(*args, "--base-url", sandbox.base_url, env=env)
    assert done.code == 2
    assert done.stderr == (
        f"pipeline: error: s3://{BUCKET}/runs/again/.results.parquet.checkpoint/: an "
        "unfinished run left its journal's checkpoint there; add --resume to continue it (or "
        "remove that folder to start over)\n"
    )
    done = run_cli(*args, "--base-url", sandbox.base_url, "--resume", env=env)
    assert done.code == 0, done.stderr[-3000:]
    assert len(sandbox.state.conversations()) == 40
