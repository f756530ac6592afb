"""``pipeline check``: the pre-flight that sends one search per location and no create.

The arithmetic and the order of requests are tested as pure functions; the rest runs the
CLI as a subprocess against the sandbox over loopback and counts what reached the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.app.probing import probe_locations
from pipeline.app.verdicts import Access, Search, TokenState, judge
from pipeline.core.constants import SCOPE_WRITE
from pipeline.core.outcomes import Code, Status
from pipeline.core.values import Rate
from pipeline.highlevel.answers import Answer, RateHeaders
from pipeline.inputs.planning import days_needed, location_estimate, send_seconds
from pipeline.sandbox import SandboxThread, token_label
from tests.conftest import TOKEN, Completed, run_cli, write_csv

ACME, BETA = "pit-acme-0000000000000001", "pit-beta-0000000000000002"
OK = Answer(Status.EXISTS, None, http_status=200, rate=RateHeaders(9, 10, 1000, 99))
REJECTED = Answer(Status.FAILED, Code.UNAUTHORIZED, http_status=401, message="Invalid token")
SERVER_ERROR = Answer(Status.FAILED, Code.SERVER_ERROR, http_status=500)
REFUSED = Answer(Status.FAILED, Code.NETWORK_ERROR, message="refused", connect_failed=True)


# -- the estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "limits", "seconds"),
    [
        (0, [(100, 10.0)], 0.0),
        (1, [(100, 10.0)], 0.0),
        (100, [(100, 10.0)], 0.0),  # one burst
        (101, [(100, 10.0)], 10.0),
        (984, [(100, 10.0)], 90.0),
        (197, [(100, 10.0), (10, 1.0)], 19.0),  # the ceiling is the slower one here
        (197, [(100, 10.0), (50, 1.0)], 10.0),  # and the announced limit here
        (1000, [(100, 0.5)], 4.5),
    ],
)
def test_send_time_is_the_slowest_limit(
    rows: int, limits: list[tuple[int, float]], seconds: float
) -> None:
    assert send_seconds(rows, limits) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("rows", "remaining", "limit", "days"),
    [
        (0, 10, 100, 0),
        (10, 10, 100, 1),  # fits what is left today
        (11, 10, 100, 2),
        (110, 10, 100, 2),
        (111, 10, 100, 3),
        (5, 0, 100, 2),  # today is spent: everything waits for tomorrow
        (150, None, 100, 2),  # unknown: a whole day is assumed left
        (200_000, None, 200_000, 1),
    ],
)
def test_days(rows: int, remaining: int | None, limit: int, days: int) -> None:
    assert days_needed(rows, remaining, limit) == days


def test_location_estimate_holds_both_limits() -> None:
    live = location_estimate(
        250, announced=(50, 2.0), ceiling=None, daily_remaining=100, daily_limit=100
    )
    assert (live.seconds, live.days) == (8.0, 3)  # ceil(250/50)-1 = 4 windows; 100 a day
    both = location_estimate(
        250, announced=(50, 2.0), ceiling=Rate(10, 1.0), daily_remaining=None, daily_limit=1000
    )
    assert (both.seconds, both.days) == (24.0, 1)
    published = location_estimate(
        250, announced=None, ceiling=None, daily_remaining=None, daily_limit=1000
    )
    assert published.seconds == 20.0  # 100/10s until an answer announces the real limit
    slow = location_estimate(
        250, announced=None, ceiling=None, daily_remaining=None, daily_limit=1000, latency_s=0.6
    )
    # the first request alone, the first burst, then two windows of 10 s and a round trip
    assert slow.seconds == pytest.approx(2 * (10 + 0.6) + 2 * 0.6)


@pytest.mark.parametrize(
    ("answer", "token", "access", "search", "sendable"),
    [
        (OK, TokenState.ACCEPTED, Access.OK, Search.OK, True),
        (REJECTED, TokenState.REJECTED, Access.NOT_CHECKED, Search.NOT_CHECKED, False),
        (
            Answer(Status.FAILED, Code.MISSING_SCOPE, http_status=401, message="scope"),
            TokenState.ACCEPTED,
            Access.NOT_CHECKED,
            Search.MISSING_SCOPE,
            True,
        ),
        (
            Answer(Status.FAILED, Code.FORBIDDEN, http_status=403),
            TokenState.ACCEPTED,
            Access.FORBIDDEN,
            Search.NOT_CHECKED,
            False,
        ),
        (
            Answer(Status.FAILED, Code.RATE_LIMITED, http_status=429),
            TokenState.ACCEPTED,
            Access.OTHER,
            Search.NOT_CHECKED,
            False,
        ),
        (SERVER_ERROR, TokenState.UNKNOWN, Access.OTHER, Search.NOT_CHECKED, False),
        (
            Answer(Status.EXISTS, None, http_status=200, rate=RateHeaders(9, 10, 1000, 0)),
            TokenState.ACCEPTED,
            Access.OK,
            Search.OK,
            False,  # the daily quota is spent
        ),
    ],
)
def test_judge(
    answer: Answer, token: TokenState, access: Access, search: Search, sendable: bool
) -> None:
    check = judge("L", 30, answer, not_probed=None, ceiling=None, daily_limit=100)
    assert (check.token, check.access, check.search, check.sendable) == (
        token,
        access,
        search,
        sendable,
    )
    assert (check.problem() is None) == sendable


# -- the order of requests ------------------------------------------------------------------


class FakeApi:
    """Answers by location after a short pause, and records when each request ran."""

    def __init__(self, answers: dict[str, list[Answer]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.seen_running: dict[str, set[str]] = {}

    async def probe(self, location: str) -> Answer:
        self.calls.append(location)
        self.seen_running[location] = set(self.running)
        self.running.add(location)
        await asyncio.sleep(0.01)
        self.running.discard(location)
        queue = self.answers[location]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def probe(api: FakeApi, groups: list[list[str]]) -> Any:
    return asyncio.run(probe_locations(api.probe, groups, connect_waits=(0.0, 0.0)))


def test_a_tokens_first_request_goes_alone() -> None:
    api = FakeApi({loc: [OK] for loc in ("A1", "A2", "A3", "B1", "B2")})
    probes = probe(api, [["A1", "A2", "A3"], ["B1", "B2"]])
    assert Counter(api.calls) == dict.fromkeys(("A1", "A2", "A3", "B1", "B2"), 1)
    assert api.calls[0] == "A1" and api.seen_running["A1"] == set()  # the very first, alone
    assert not {"B2"} & api.seen_running["B1"]  # B's first: no other B location in flight
    assert "B1" not in api.seen_running["B2"]  # the rest of B waited for its answer
    assert set(probes.answers) == {"A1", "A2", "A3", "B1", "B2"} and not probes.rejected


def test_a_rejected_token_costs_one_request() -> None:
    api = FakeApi({"A1": [OK], "A2": [OK], "B1": [REJECTED], "B2": [OK], "B3": [OK]})
    probes = probe(api, [["A1", "A2"], ["B1", "B2", "B3"]])
    assert sorted(api.calls) == ["A1", "A2", "B1"]
    assert probes.rejected == {"B2": "B1", "B3": "B1"}  # rejected on B1's answer
    assert probes.answers["B1"] is REJECTED


def test_an_undecided_first_answer_lets_the_next_location_go_alone() -> None:
    api = FakeApi({"B1": [SERVER_ERROR], "B2": [REJECTED], "B3": [OK]})
    probes = probe(api, [["B1", "B2", "B3"]])
    assert api.calls == ["B1", "B2"]  # a 500 says nothing about the token; the 401 does
    assert probes.rejected == {"B3": "B2"}


def test_no_connection_is_tried_three_times_then_stops_everything() -> None:
    api = FakeApi({"A1": [REFUSED], "A2": [OK], "B1": [OK]})
    probes = probe(api, [["A1", "A2"], ["B1"]])
    assert api.calls == ["A1", "A1", "A1"]
    assert probes.unreachable is REFUSED and probes.answers == {}


def test_a_connection_made_on_the_second_try_goes_on() -> None:
    api = FakeApi({"A1": [REFUSED, OK], "A2": [OK]})
    probes = probe(api, [["A1", "A2"]])
    assert api.calls == ["A1", "A1", "A2"]
    assert probes.unreachable is None and probes.answers["A1"] is OK


# -- against the sandbox --------------------------------------------------------------------


def check(
    sandbox: SandboxThread | str, src: Path, *args: str, token: str | None = TOKEN, **kw: Any
) -> Completed:
    base_url = sandbox if isinstance(sandbox, str) else sandbox.base_url
    return run_cli("check", str(src), "--base-url", base_url, *args, token=token, **kw)


def as_json(done: Completed) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def by_location(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {loc["location_id"]: loc for loc in document["locations"]}


def rows_for(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"c{loc}{i}", loc) for loc, n in counts.items() for i in range(n)]


def test_all_locations_ready(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(rate_max=40, rate_interval_ms=2000, daily_limit=5000)
    rows = rows_for({"LA": 90, "LB": 40, "LC": 1})
    src = write_csv(tmp_path / "in.csv", [*rows, rows[0], ("bad/id", "LA")])
    done = check(sandbox, src, "--format", "json", "--daily-quota", "5000")
    assert done.code == 0, done.stderr
    document = as_json(done)
    assert document["rows"] == {"total": 133, "to_send": 131, "invalid": 1, "duplicate": 1}
    found = by_location(document)
    assert {loc: found[loc]["rows"] for loc in found} == {"LA": 90, "LB": 40, "LC": 1}
    for loc in found.values():
        assert (loc["token"], loc["access"], loc["search"], loc["sendable"]) == (
            "accepted",
            "ok",
            "ok",
            True,
        )
        # The sandbox's headers after the probe took one slot and one unit of the day.
        assert (loc["rate_max"], loc["rate_interval_ms"], loc["rate_remaining"]) == (40, 2000, 39)
        assert (loc["daily_remaining"], loc["daily_limit"]) == (4999, 5000)
        assert loc["http_status"] == 200 and len(loc["trace_id"]) == 36
    # Windows plus the round trips the probes measured (milliseconds on loopback).
    estimated = [found[loc]["estimated_s"] for loc in ("LA", "LB", "LC")]
    assert estimated == pytest.approx([4.0, 0.0, 0.0], abs=0.2)
    assert document["summary"] == {
        "locations": 3,
        "sendable": 3,
        "not_sendable": 0,
        "warnings": 0,
        "rows_to_send": 131,
        "estimated_s": pytest.approx(4.0, abs=0.2),
        "estimated": "4s",
        "days": 1,
        "unreachable": None,
    }
    log = sandbox.state.requests()
    assert sorted(r.location_id or "" for r in log) == ["LA", "LB", "LC"]
    assert {(r.method, r.path) for r in log} == {("GET", "/conversations/search")}
    assert sandbox.state.conversations() == {}


def test_the_table(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 3, "LB": 2}))
    done = check(sandbox, src)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"5 rows -> check against {sandbox.base_url}"
    header = next(line for line in lines if line.strip().startswith("location_id"))
    columns = "location_id rows token access search limit remaining daily left time days trace_id"
    assert header.split() == columns.split()
    la = next(line for line in lines if line.strip().startswith("LA"))
    figures = ["3", "accepted", "ok", "ok", "100/10s", "99", "199999", "0s", "1"]
    assert la.split()[:10] == ["LA", *figures]
    assert lines[-1] == "ready: 2 of 2 locations; estimated sending time 0s over 1 day"


def test_a_wrong_token_is_rejected_with_one_request(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 5, "LB": 4, "LC": 3, "LD": 2}))
    done = check(sandbox, src, "--format", "json", token="pit-wrong-token")
    assert done.code == 1, done.stderr
    found = by_location(as_json(done))
    assert {loc["token"] for loc in found.values()} == {"rejected"}
    assert not any(loc["sendable"] for loc in found.values())
    log = sandbox.state.requests()
    assert [(r.location_id, r.status) for r in log] == [("LA", 401)]  # the biggest goes first
    assert found["LA"]["http_status"] == 401 and found["LB"]["http_status"] is None
    assert found["LB"]["message"].startswith("401 on LA, which has the same token")
    assert "pit-wrong-token" not in done.stdout + done.stderr


def test_a_rejected_location_has_no_sending_time(sandbox: SandboxThread, tmp_path: Path) -> None:
    """Issue 26: a location a run could not send shows no time, and a check that can send
    nothing says so rather than estimate; one row and one location are singular."""
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 2, "LB": 1}))
    done = check(sandbox, src, token="pit-wrong-token")
    assert done.code == 1, done.stderr
    lines = done.stdout.splitlines()
    lb = next(line for line in lines if line.strip().startswith("LB"))
    assert lb.split() == ["LB", "1", "rejected", "not", "checked", "not", "checked"] + ["-"] * 6
    assert lines[-1] == "ready: 0 of 2 locations (2 not sendable); nothing can be sent"
    document = as_json(check(sandbox, src, "--format", "json", token="pit-wrong-token"))
    assert {(loc["estimated_s"], loc["days"]) for loc in document["locations"]} == {(None, None)}
    summary = document["summary"]
    assert (summary["estimated_s"], summary["estimated"], summary["days"]) == (None, None, None)
    one = check(sandbox, write_csv(tmp_path / "one.csv", [("c1", "LA")]))
    assert one.stdout.splitlines()[0] == f"1 row -> check against {sandbox.base_url}"
    assert one.stdout.splitlines()[-1] == (
        "ready: 1 of 1 location; estimated sending time 0s over 1 day"
    )


def test_one_good_and_one_bad_token(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(tokens=[ACME])  # BETA is not accepted at all
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        "[tokens]\n"
        + "".join(f'{loc} = {{ env = "T_ACME" }}\n' for loc in ("A1", "A2", "A3"))
        + "".join(f'{loc} = {{ env = "T_BETA" }}\n' for loc in ("B1", "B2", "B3")),
        encoding="utf-8",
    )
    src = write_csv(
        tmp_path / "in.csv", rows_for({"A1": 3, "B1": 3, "A2": 2, "B2": 2, "A3": 1, "B3": 1})
    )
    done = check(
        sandbox,
        src,
        "--format",
        "json",
        "--tokens-file",
        str(tokens),
        token=None,
        env={"T_ACME": ACME, "T_BETA": BETA},
    )
    assert done.code == 1, done.stderr
    found = by_location(as_json(done))
    assert {loc: found[loc]["token"] for loc in found} == {
        **dict.fromkeys(("A1", "A2", "A3"), "accepted"),
        **dict.fromkeys(("B1", "B2", "B3"), "rejected"),
    }
    assert all(found[loc]["sendable"] for loc in ("A1", "A2", "A3"))
    by_token = Counter(r.token for r in sandbox.state.requests())
    assert by_token == {token_label(ACME): 3, token_label(BETA): 1}
    assert ACME not in done.stdout + done.stderr and BETA not in done.stdout + done.stderr


def test_a_location_without_a_token(sandbox: SandboxThread, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("location_id,token_env\nLA,T_A\n", encoding="utf-8")
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 2, "LZ": 2}))
    done = check(sandbox, src, "--tokens-file", str(tokens), token=None, env={"T_A": TOKEN})
    assert done.code == 1
    assert "LZ: no token for this location in the tokens file" in done.stdout
    assert [r.location_id for r in sandbox.state.requests()] == ["LA"]


def test_a_location_bound_to_another_token_is_forbidden(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(tokens=[TOKEN, ACME], location_tokens={"LB": ACME})
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 3, "LB": 2}))
    done = check(sandbox, src, "--format", "json")
    assert done.code == 1, done.stderr
    found = by_location(as_json(done))
    assert (found["LB"]["token"], found["LB"]["access"], found["LB"]["http_status"]) == (
        "accepted",
        "forbidden",
        403,
    )
    assert found["LB"]["message"] == "The token does not have access to this location."
    assert found["LA"]["sendable"] and not found["LB"]["sendable"]
    table = check(sandbox, src)
    assert "LB: the token may not use this location (HTTP 403)" in table.stdout


def test_a_token_without_the_search_scope_is_a_warning(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(token_scopes={TOKEN: [SCOPE_WRITE]})
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 3, "LB": 2}))
    done = check(sandbox, src, "--format", "json")
    assert done.code == 0, done.stderr
    document = as_json(done)
    for loc in document["locations"]:
        assert (loc["token"], loc["search"], loc["sendable"]) == ("accepted", "missing scope", True)
        assert loc["http_status"] == 401
    assert document["summary"]["warnings"] == 2
    table = check(sandbox, src)
    assert table.code == 0
    assert "missing scope" in table.stdout and "conversations.readonly" in table.stdout
    assert len(sandbox.state.requests()) == 4  # two checks, one request per location each


def test_rate_ceiling_and_daily_quota_change_the_estimate(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(daily_limit=50)
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 120, "LB": 20}))
    plain = as_json(check(sandbox, src, "--format", "json", "--daily-quota", "50"))
    assert by_location(plain)["LA"]["estimated_s"] == pytest.approx(10.0, abs=0.2)  # 2 bursts
    sandbox.reset()
    ceiling = as_json(check(sandbox, src, "--format", "json", "--rate", "10/1s"))
    la, lb = by_location(ceiling)["LA"], by_location(ceiling)["LB"]
    both = (la["estimated_s"], lb["estimated_s"])
    assert both == pytest.approx((11.0, 1.0), abs=0.3)  # both limits hold, plus round trips
    assert ceiling["summary"]["estimated_s"] == pytest.approx(11.0, abs=0.3)
    # 49 left today after the probe, 50 a day after that: 120 rows span three days.
    assert (la["daily_remaining"], by_location(plain)["LA"]["days"]) == (49, 3)


def test_an_unreachable_api_stops_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as probe_socket:  # a loopback port where nothing listens
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 3, "LB": 2}))
    started = time.monotonic()
    done = check(url, src, "--format", "json", timeout=60)
    # The connect waits come to about a second; a check that waited for an answer instead
    # would take the --timeout (30 s) per request. 20 s holds on a loaded machine too.
    assert time.monotonic() - started < 20
    assert done.code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "cannot reach the API" in lines[0]
    document = as_json(done)
    assert {loc["access"] for loc in document["locations"]} == {"unreachable"}
    assert document["summary"]["unreachable"]


def test_usage_errors_exit_2(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for({"LA": 1}))
    no_token = check(sandbox, src, token=None)
    assert no_token.code == 2 and no_token.stderr.startswith("pipeline: error: no API token")
    missing = check(sandbox, tmp_path / "nope.csv")
    assert missing.code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert sandbox.state.requests() == []


def test_many_small_locations_are_estimated_at_this_tools_pace(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """400 locations of 30 rows: the limits allow it all in one burst each, but 12,000
    requests take this tool ~7 s at 1,800 a second, and the estimate says so."""
    src = write_csv(tmp_path / "in.csv", rows_for({f"L{k:03d}": 30 for k in range(400)}))
    document = as_json(check(sandbox, src, "--format", "json"))
    assert max(loc["estimated_s"] for loc in document["locations"]) < 1.0
    assert document["summary"]["estimated_s"] == pytest.approx(12_000 / 1_800, rel=0.01)


def test_a_check_offers_only_the_options_it_uses(tmp_path: Path) -> None:
    """A check writes no results: the run's options about them (the summary, --fail-on,
    --known, notifications, metrics, workers...) are neither listed nor silently taken; nor
    are those about retries and lookups (it sends one request a location). An export of
    tokens mints them from --oauth-file: no static token option either."""
    from pipeline.cli.group import RUN_ONLY, SEND_ONLY, STATIC_TOKENS

    def flags(names: frozenset[str]) -> set[str]:
        return {f"--{name.replace('_', '-')}" for name in names}

    shown = run_cli("check", "--help").stdout
    assert not [flag for flag in flags(RUN_ONLY | SEND_ONLY) if re.search(rf"{flag}\b", shown)]
    assert "--rate" in shown and "--tokens-file" in shown and "--format" in shown
    export = run_cli("oauth", "export-tokens", "--help").stdout
    left_out = flags(RUN_ONLY | SEND_ONLY | STATIC_TOKENS)
    assert not [flag for flag in left_out if re.search(rf"{flag}\b", export)]
    assert "--oauth-file" in export and "--min-lifetime" in export and "--rate" in export
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    done = run_cli("check", str(src), "--fail-on", "invalid")
    assert done.code == 2
    assert done.stderr.splitlines()[-1].startswith("pipeline: error: No such option '--fail-on'.")
