"""The array benchmark (``bench.array``): its pure pieces, and one tiny task end to end
(moto, the sandbox and the pipeline as processes, as ``python -m bench --only array``)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.array import (
    Case,
    bench_array,
    kinds,
    parse_checkpoints,
    parse_store_log,
    total_locations,
)
from bench.harness import Options
from pipeline.inputs.shards import owner


def test_the_checkpoints_line_is_read_from_the_json_log() -> None:
    line = {"event": "checkpoints", "epoch": 1, "segments": 3, "bytes": 900, "requests": 13}
    stderr = "\n".join(['{"event": "planned"}', "not json", json.dumps(line), "{broken"])
    found = parse_checkpoints(stderr)
    assert found is not None
    assert (found.segments, found.bytes, found.requests) == (3, 900, 13)
    assert parse_checkpoints('{"event": "finished"}\n') is None


def test_moto_access_log_lines_are_counted_by_kind() -> None:
    log = "\n".join(
        [
            " * Running on http://127.0.0.1:5000",
            '127.0.0.1 - - [28/Nov/2026 16:39:09] "PUT /b/in.parquet HTTP/1.1" 200 -',
            '127.0.0.1 - - [x] "GET /b?list-type=2&prefix=r/.p.parquet.checkpoint/ HTTP/1.1" 200 -',
            '127.0.0.1 - - [x] "PUT /b/r/.p.parquet.checkpoint/segment-000001 HTTP/1.1" 200 -',
            '127.0.0.1 - - [x] "POST /b?delete HTTP/1.1" 200 -',
            '127.0.0.1 - - [x] "\x1b[35m\x1b[1mGET /b/in.parquet HTTP/1.1\x1b[0m" 206 -',
        ]
    )
    requests = parse_store_log(log)
    assert [r.checkpoint for r in requests] == [False, True, True, True, False]
    assert (requests[-1].method, requests[-1].status) == ("GET", 206)
    assert kinds([r for r in requests if r.checkpoint]) == "1 list, 1 put, 1 delete"


def test_the_input_gives_shard_0_exactly_the_locations_asked_for() -> None:
    total = total_locations(25, 4)
    owned = [k for k in range(total) if owner(f"loc{k + 1:04d}", 4) == 0]
    assert len(owned) == 25 and owned[-1] == total - 1


def test_a_tiny_task_runs_cleanly(tmp_path: Path) -> None:
    options = Options(
        large=False,
        workdir=tmp_path,
        concurrency=64,
        repeats=1,
        capacity_rows=200,
        only=frozenset({"array"}),
    )
    table = bench_array(options, Case(4, 20, (None, 1.0)))
    assert not table.error, (table.figures, table.notes)
    assert not table.missed, table.missed
    names = [f.name for f in table.figures]
    assert "default: checkpoint requests S3 received (moto's log)" in names
    assert "--checkpoint-interval 1: 429 answers" in names
