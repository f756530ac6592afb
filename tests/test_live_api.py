"""The pipeline against a sandbox that answers the way HighLevel's live API answers.

The "already exists" 400 carries a trace id after its text, every JSON answer has a
``traceId``, only the four published ``Version`` values are accepted, a token may lack the
search scope, and limits are announced in headers. Each test runs the real CLI against the
sandbox over loopback and checks the results against the sandbox's own record.
"""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import polars as pl
import pytest

from pipeline.auth.tokens import Tokens
from pipeline.core import constants
from pipeline.highlevel.client import ConversationsClient
from pipeline.sandbox import SandboxThread, token_label
from pipeline.send.session import run_async
from tests.conftest import TOKEN, run_cli, write_csv
from tests.test_end_to_end import fast_limits

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def pairs(locations: int, per_location: int) -> list[tuple[str, str]]:
    """(contact, location) rows, locations interleaved as exports often are."""
    return [(f"c{i}x{j}", f"L{j}") for i in range(per_location) for j in range(locations)]


def posts_by_token(sandbox: SandboxThread) -> Counter[str | None]:
    return Counter(r.token for r in sandbox.state.requests() if r.method == "POST")


def test_a_fifth_already_there_then_the_whole_file_again(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = pairs(4, 50)
    existing = sandbox.seed_conversations([(loc, c) for c, loc in rows[::5]])
    src = write_csv(tmp_path / "in.csv", rows + rows[:10])  # and ten repeated rows
    out = tmp_path / "first.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox, 50, 500))
    assert done.code == 0, done.stderr[-2000:]
    first = pl.read_parquet(out)
    held = sandbox.state.conversations()
    assert len(held) == 200
    for row in first.iter_rows(named=True):
        key = (row["location_id"], row["contact_id"])
        assert row["conversation_id"] == held[key], row
        if key in existing and row["status"] != "duplicate":
            assert (row["status"], row["error_code"], row["http_status"]) == (
                "exists",
                "conversation_exists",
                400,
            )
            # The live wording, whole: the trace id after the text, and kept as trace_id.
            assert row["error_message"] == (
                f"Conversation with the contact id:{row['contact_id']} already exists! "
                f"{row['trace_id']}"
            )
    assert Counter(first["status"].to_list()) == {"created": 160, "exists": 40, "duplicate": 10}

    # The same file again: nothing new is created, every row ends with its id.
    again = tmp_path / "again.parquet"
    done = run_cli("run", str(src), "-o", str(again), *fast_limits(sandbox, 50, 500))
    assert done.code == 0, done.stderr[-2000:]
    second = pl.read_parquet(again)
    assert Counter(second["status"].to_list()) == {"exists": 200, "duplicate": 10}
    assert second["conversation_id"].to_list() == first["conversation_id"].to_list()
    assert sandbox.state.conversations() == held
    assert second.filter(pl.col("status") == "exists")["trace_id"].null_count() == 0


def test_every_answered_row_keeps_its_trace_id(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(fault_500=1.0)
    src = write_csv(tmp_path / "in.csv", [("a", "L")])
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--max-attempts", "2", *fast_limits(sandbox))
    assert done.code == 1
    row = pl.read_parquet(out).row(0, named=True)
    assert (row["status"], row["error_code"]) == ("failed", "server_error")
    assert UUID.match(row["trace_id"])
    failures = [line for line in done.stderr.splitlines() if '"row failed"' in line]
    assert len(failures) == 1 and row["trace_id"] in failures[0]  # quotable to support


def test_a_wrong_token_costs_one_request(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", pairs(5, 40))
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox), token="pit-wrong-0001")
    assert done.code == 1
    assert len(sandbox.state.requests()) == 1
    results = pl.read_parquet(out)
    assert results.height == 200 and set(results["error_code"]) == {"unauthorized"}
    assert Counter(results["status"].to_list()) == {"failed": 1, "skipped": 199}


def test_one_good_and_one_bad_token(sandbox: SandboxThread, tmp_path: Path) -> None:
    good, bad = "pit-good-0123456789", "pit-bad-0123456789"
    sandbox.update_config(tokens=[good])
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(
        "location_id,token_env\n"
        + "".join(f"G{j},T_GOOD\n" for j in range(3))
        + "".join(f"B{j},T_BAD\n" for j in range(3)),
        encoding="utf-8",
    )
    rows = [(f"c{i}", f"{kind}{j}") for i in range(30) for kind in "BG" for j in range(3)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--tokens-file",
        str(tokens),
        *fast_limits(sandbox),
        token=None,
        env={"T_GOOD": good, "T_BAD": bad},
    )
    assert done.code == 1
    assert posts_by_token(sandbox) == {token_label(good): 90, token_label(bad): 1}
    results = pl.read_parquet(out)
    theirs = results.filter(pl.col("location_id").str.starts_with("B"))
    assert set(theirs["error_code"]) == {"unauthorized"} and theirs.height == 90
    ours = results.filter(pl.col("location_id").str.starts_with("G"))
    assert ours["status"].to_list() == ["created"] * 90


def test_a_forbidden_location_costs_one_request(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(location_tokens={"THEIRS": "another-token"})
    rows = [(f"a{i}", "THEIRS") for i in range(30)] + [(f"b{i}", "OURS") for i in range(30)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1
    assert Counter(r.location_id for r in sandbox.state.requests())["THEIRS"] == 1
    results = pl.read_parquet(out)
    assert set(results.filter(pl.col("location_id") == "THEIRS")["error_code"]) == {"forbidden"}
    assert results.filter(pl.col("location_id") == "OURS")["status"].to_list() == ["created"] * 30


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_ends_in_seconds(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    src = write_csv(tmp_path / "in.csv", pairs(20, 50))
    out = tmp_path / "out.parquet"
    started = time.monotonic()
    done = run_cli("run", str(src), "-o", str(out), "--base-url", url, "--log-format", "json")
    assert time.monotonic() - started < 15
    assert done.code == 1
    said = [line for line in done.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(said) == 1 and url in said[0] and "cannot reach the API" in said[0], done.stderr
    assert "Connect" in said[0]  # the cause, not cut short
    results = pl.read_parquet(out)
    assert results.height == 1000
    assert set(results["status"]) == {"skipped"} and set(results["error_code"]) == {"unreachable"}
    assert results["attempts"].sum() == 3  # three attempts, by the one first request


def test_rate_is_a_ceiling_beside_the_announced_limit(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """--rate 10/1s against 100 per 10 s: about 10 a second, not 10 per 10 s."""
    sandbox.update_config(rate_max=100, rate_interval_ms=10_000)
    src = write_csv(tmp_path / "in.csv", pairs(1, 40))
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--rate", "10/1s", "--base-url", sandbox.base_url
    )
    assert done.code == 0, done.stderr[-2000:]
    times = sorted(r.t for r in sandbox.state.requests())
    span = times[-1] - times[0]
    assert 2.9 < span < 5.0, span  # 40 requests at 10 a second: three more windows after the first
    assert all(
        sum(1 for u in times if t <= u < t + 1.0) <= 10 for t in times
    )  # the ceiling held in every second


def test_no_rate_follows_the_announced_limit_up(sandbox: SandboxThread, tmp_path: Path) -> None:
    """HighLevel sets limits per app and location: 300 per 2 s is taken as announced."""
    sandbox.update_config(rate_max=300, rate_interval_ms=2000)
    src = write_csv(tmp_path / "in.csv", pairs(1, 600))
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--base-url", sandbox.base_url)
    assert done.code == 0, done.stderr[-2000:]
    log = sandbox.state.requests()
    assert not [r for r in log if r.status == 429]
    times = sorted(r.t for r in log)
    assert times[-1] - times[0] < 4.5  # two windows of 2 s, not six of 10 s at 100


def test_a_token_without_the_search_scope(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(token_scopes={TOKEN: [constants.SCOPE_WRITE]})
    rows = pairs(1, 20)
    sandbox.seed_conversations([(loc, c) for c, loc in rows[:5]])
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr[-2000:]
    results = pl.read_parquet(out)
    assert Counter(results["status"].to_list()) == {"exists": 5, "created": 15}
    found = results.filter(pl.col("status") == "exists")
    assert found["conversation_id"].null_count() == 5
    assert all("conversations.readonly" in m for m in found["error_message"])
    searches = [r for r in sandbox.state.requests() if r.method == "GET"]
    assert len(searches) == 1  # the first "missing scope" answer was the last search


@pytest.mark.parametrize("version", constants.API_VERSIONS)
def test_each_version_is_sent_as_given(version: str) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Version"])
        return httpx.Response(201, json={"success": True, "conversation": {"id": "c1"}})

    async def create() -> str | None:
        from pipeline.highlevel.transport import HttpxTransport

        transport = HttpxTransport(
            base_url="http://api.test",
            headers={"Version": version},
            timeout=5,
            concurrency=1,
            transport=httpx.MockTransport(answer),
        )
        client = ConversationsClient(
            base_url="http://api.test",
            tokens=Tokens(default="t"),
            api_version=version,
            timeout=5,
            concurrency=1,
            transport=transport,
        )
        async with client:
            return (await client.create_conversation("L", "c")).conversation_id

    assert run_async(create()) == "c1" and seen == [version]


def test_v3_end_to_end(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", pairs(2, 5))
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--api-version", "v3", *fast_limits(sandbox))
    assert done.code == 0, done.stderr[-2000:]
    assert pl.read_parquet(out)["status"].to_list() == ["created"] * 10


def test_an_unknown_version_is_a_usage_error(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", pairs(1, 1))
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), "--api-version", "2024-01")
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(v in lines[0] for v in constants.API_VERSIONS), lines
