"""The pipeline against a sandbox that answers the way HighLevel's live API answers.

The "already exists" 400 carries a trace id after its text, every JSON answer has a
``traceId``, only the four published ``Version`` values are accepted, a token may lack the
search scope, and limits are announced in headers. Each test runs the real CLI against the
sandbox over loopback and checks the results against the sandbox's own record.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import polars as pl
import pytest
from aiohttp import web

from pipeline.auth.tokens import Tokens
from pipeline.core import constants
from pipeline.highlevel.client import ConversationsClient
from pipeline.highlevel.transport import HTTP_STACKS, HttpStack
from pipeline.sandbox import Sandbox, SandboxConfig, SandboxThread, server, token_label
from pipeline.send.session import run_async
from tests.conftest import TOKEN, run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

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


@pytest.mark.timing
def test_nothing_listening_ends_in_seconds(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    src = write_csv(tmp_path / "in.csv", pairs(20, 50))
    out = tmp_path / "out.parquet"
    started = time.monotonic()
    done = run_cli("run", str(src), "-o", str(out), "--base-url", url, "--log-format", "json")
    assert time.monotonic() - started < 20  # three attempts' backoff and start-up, not a hang
    assert done.code == 1
    said = [line for line in done.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(said) == 1 and url in said[0] and "cannot reach the API" in said[0], done.stderr
    assert "Connect" in said[0]  # the cause, not cut short
    results = pl.read_parquet(out)
    assert results.height == 1000
    assert set(results["status"]) == {"skipped"} and set(results["error_code"]) == {"unreachable"}
    assert results["attempts"].sum() == 3  # three attempts, by the one first request


def bursts(times: list[float], gap: float) -> list[list[float]]:
    """``times`` (sorted) in the groups that no pause longer than ``gap`` splits."""
    groups = [times[:1]]
    for before, t in itertools.pairwise(times):
        if t - before > gap:
            groups.append([])
        groups[-1].append(t)
    return groups


@pytest.mark.timing
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
    assert times[-1] - times[0] > 2.9  # 40 requests at 10 a second: three windows after the first
    assert all(
        sum(1 for u in times if t <= u < t + 1.0) <= 10 for t in times
    )  # the ceiling held in every second
    # ...and was used: four bursts of ten, each as soon as its window opens (a second after
    # the one before: not half a window late, none skipped, not 10 per 10 s), with half a
    # second for a loaded machine's late answers.
    groups = bursts(times, 0.5)
    assert [len(g) for g in groups] == [10, 10, 10, 10], times
    starts = [g[0] for g in groups]
    assert all(1.0 <= b - a < 1.5 for a, b in itertools.pairwise(starts)), starts


@pytest.mark.timing
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
    # Two windows of 2 s (not six of 10 s at 100, nor three at 200): two bursts, whatever
    # the machine's load stretches them to.
    assert [len(g) for g in bursts(times, 1.0)] == [300, 300], times[-1] - times[0]


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


@dataclass
class Arrived:
    """What reached the sandbox: each request's method, path and ``Version`` header."""

    sandbox: SandboxThread
    requests: list[tuple[str, str, str | None]]


@pytest.fixture
def arrived(monkeypatch: pytest.MonkeyPatch) -> Iterator[Arrived]:
    """A sandbox that also records the ``Version`` header of every request as it arrived on
    the wire (whatever the client or its transport put there), before the sandbox judges it."""
    seen: list[tuple[str, str, str | None]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append((request.method, request.path, request.headers.get(constants.H_VERSION)))
        return cast(web.StreamResponse, await handler(request))

    plain = server.build_app

    def recording(sandbox: Sandbox) -> web.Application:
        app = plain(sandbox)
        app.middlewares.append(record)
        return app

    monkeypatch.setattr(server, "build_app", recording)
    with SandboxThread(SandboxConfig(tokens=[TOKEN])) as sandbox:
        yield Arrived(sandbox, seen)


@pytest.mark.parametrize("version", constants.API_VERSIONS)
@pytest.mark.parametrize("stack", HTTP_STACKS)
def test_each_version_is_sent_as_given(version: str, stack: HttpStack, arrived: Arrived) -> None:
    """The client's own transport (no headers given by the test) carries the Version it was
    given to the server, for a create and a search."""

    async def create() -> str | None:
        client = ConversationsClient(
            base_url=arrived.sandbox.base_url,
            tokens=Tokens(default=TOKEN),
            api_version=version,
            timeout=5,
            concurrency=1,
            http_stack=stack,
        )
        async with client:
            made = await client.create_conversation("L", "c")
            await client.find_conversation("L", "c")
            return made.conversation_id

    made = run_async(create())
    assert made == arrived.sandbox.state.conversations()[("L", "c")]
    assert arrived.requests == [
        ("POST", constants.CREATE_CONVERSATION_PATH, version),
        ("GET", constants.SEARCH_CONVERSATIONS_PATH, version),
    ]


def test_v3_end_to_end(arrived: Arrived, tmp_path: Path) -> None:
    sandbox = arrived.sandbox
    src = write_csv(tmp_path / "in.csv", pairs(2, 5))
    out = tmp_path / "out.parquet"
    done = run_cli("run", str(src), "-o", str(out), "--api-version", "v3", *fast_limits(sandbox))
    assert done.code == 0, done.stderr[-2000:]
    assert pl.read_parquet(out)["status"].to_list() == ["created"] * 10
    posts = [r for r in arrived.requests if r[0] == "POST"]
    assert len(posts) == 10 and {version for _, _, version in posts} == {"v3"}, arrived.requests


def test_an_unknown_version_is_a_usage_error(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", pairs(1, 1))
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), "--api-version", "2024-01")
    assert done.code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(v in lines[0] for v in constants.API_VERSIONS), lines
