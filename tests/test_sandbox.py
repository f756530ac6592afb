"""The sandbox server, over a real loopback socket, with plain httpx/aiohttp clients.

Never uses the project's client: the sandbox must be checked against the API reference,
not against the code it is meant to test.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from pipeline.constants import (
    DEFAULT_API_VERSION,
    H_DAILY_REMAINING,
    H_INTERVAL_MS,
    H_LIMIT_DAILY,
    H_MAX,
    H_REMAINING,
    H_RETRY_AFTER,
)
from pipeline.sandbox import (
    DEFAULT_TOKEN,
    SandboxConfig,
    SandboxThread,
    parse_rate,
    start_sandbox,
)

RATE_HEADERS = (H_LIMIT_DAILY, H_DAILY_REMAINING, H_INTERVAL_MS, H_MAX, H_REMAINING)
HEADERS = {
    "Authorization": f"Bearer {DEFAULT_TOKEN}",
    "Version": DEFAULT_API_VERSION,
    "Accept": "application/json",
}
ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")

SandboxFactory = Callable[..., tuple[SandboxThread, httpx.Client]]


@pytest.fixture
def sandbox() -> Iterator[SandboxFactory]:
    """Start a sandbox thread with config overrides; yields (sandbox, client on its URL)."""
    opened: list[tuple[SandboxThread, httpx.Client]] = []

    def start(**fields: Any) -> tuple[SandboxThread, httpx.Client]:
        sb = SandboxThread(SandboxConfig.from_dict(fields), shutdown_timeout=0.5).start()
        client = httpx.Client(base_url=sb.base_url, headers=HEADERS, timeout=5.0)
        opened.append((sb, client))
        return sb, client

    yield start
    for sb, client in opened:
        client.close()
        sb.stop()


def create(client: httpx.Client, location: str = "L1", contact: str = "C1") -> httpx.Response:
    return client.post("/conversations/", json={"locationId": location, "contactId": contact})


# -- config ---------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = SandboxConfig(rate_max=5, location_tokens={"L": "t"}, fault_500=0.25)
    assert SandboxConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert SandboxConfig.from_dict({}) == SandboxConfig()
    with pytest.raises(ValueError, match="unknown"):
        SandboxConfig.from_dict({"rate_maxx": 1})
    for bad in ({"fault_500": 1.5}, {"fault_500": 0.6, "fault_drop": 0.6}, {"rate_max": "x"}):
        with pytest.raises(ValueError):
            SandboxConfig.from_dict(bad)


def test_parse_rate() -> None:
    assert parse_rate("100/10s") == (100, 10_000)
    assert parse_rate("5/500ms") == (5, 500)
    assert parse_rate("60/1m") == (60, 60_000)
    assert parse_rate("3/s") == (3, 1000)
    assert parse_rate("0")[0] == 0
    with pytest.raises(ValueError):
        parse_rate("fast")


# -- auth, Version, validation ---------------------------------------------------------------


def test_missing_or_unknown_token_is_401(sandbox: SandboxFactory) -> None:
    sb, _ = sandbox()
    expected = {
        "statusCode": 401,
        "message": "Invalid token: access token is invalid",
        "error": "Unauthorized",
    }
    body = {"locationId": "L1", "contactId": "C1"}
    for auth in (None, "Bearer wrong", "Basic sandbox-token", "Bearer", ""):
        headers = {"Version": DEFAULT_API_VERSION}
        if auth is not None:
            headers["Authorization"] = auth
        r = httpx.post(f"{sb.base_url}/conversations/", json=body, headers=headers)
        assert r.status_code == 401
        assert r.json() == expected


def test_empty_token_list_accepts_any_token(sandbox: SandboxFactory) -> None:
    _, client = sandbox(tokens=[])
    r = client.post(
        "/conversations/",
        json={"locationId": "L1", "contactId": "C1"},
        headers={"Authorization": "Bearer anything"},
    )
    assert r.status_code == 201


def test_missing_version_is_400(sandbox: SandboxFactory) -> None:
    sb, _ = sandbox()
    r = httpx.post(
        f"{sb.base_url}/conversations/",
        json={"locationId": "L1", "contactId": "C1"},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    assert r.status_code == 400
    assert r.json() == {"statusCode": 400, "message": "Version header is required"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not json", "locationId must be a string"),
        (b"[1, 2]", "contactId must be a string"),
        (b'{"contactId": "C1"}', "locationId must be a string"),
        (b'{"locationId": "L1", "contactId": 7}', "contactId must be a string"),
        (b'{"locationId": "", "contactId": "C1"}', "locationId should not be empty"),
    ],
)
def test_bad_body_is_422(sandbox: SandboxFactory, content: bytes, expected: str) -> None:
    sb, client = sandbox()
    r = client.post(
        "/conversations/", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["statusCode"] == 422 and body["error"] == "Unprocessable Entity"
    assert expected in body["message"]
    assert sb.state.conversations() == {}


def test_location_bound_token_gets_403_elsewhere(sandbox: SandboxFactory) -> None:
    _, client = sandbox(location_tokens={"L1": "tok-1", "L2": "tok-2"})
    ok = client.post(
        "/conversations/",
        json={"locationId": "L1", "contactId": "C1"},
        headers={"Authorization": "Bearer tok-1"},
    )
    assert ok.status_code == 201
    for token in ("tok-2", DEFAULT_TOKEN):
        r = client.post(
            "/conversations/",
            json={"locationId": "L1", "contactId": "C2"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 403
        assert r.json() == {
            "statusCode": 403,
            "message": "The token does not have access to this location.",
            "error": "Forbidden",
        }
    # Unlisted locations stay open to any accepted token.
    assert create(client, "L3", "C1").status_code == 201


# -- create and search -----------------------------------------------------------------------


def test_create_answers_201_with_conversation(sandbox: SandboxFactory) -> None:
    sb, client = sandbox()
    r = create(client, "L1", "C1")
    assert r.status_code == 201
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    conv = body["conversation"]
    assert body["success"] is True
    assert set(conv) == {
        "id",
        "dateUpdated",
        "dateAdded",
        "deleted",
        "contactId",
        "locationId",
        "lastMessageDate",
        "assignedTo",
    }
    assert ID_RE.match(conv["id"])
    assert (conv["locationId"], conv["contactId"], conv["deleted"]) == ("L1", "C1", False)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", conv["dateAdded"])
    assert all(h in r.headers for h in RATE_HEADERS)
    assert sb.state.conversations() == {("L1", "C1"): conv["id"]}


def test_create_status_and_path_without_slash(sandbox: SandboxFactory) -> None:
    _, client = sandbox(create_status=200)
    r = client.post("/conversations", json={"locationId": "L1", "contactId": "C9"})
    assert r.status_code == 200
    assert r.json()["conversation"]["contactId"] == "C9"


def test_second_create_is_400_already_exists(sandbox: SandboxFactory) -> None:
    sb, client = sandbox()
    first = create(client, "L1", "abcDEF123").json()["conversation"]["id"]
    r = create(client, "L1", "abcDEF123")
    assert r.status_code == 400
    assert r.json() == {
        "statusCode": 400,
        "message": "Conversation with the contact id:abcDEF123 already exists!",
    }
    assert all(h in r.headers for h in RATE_HEADERS)
    assert r.headers[H_REMAINING] == "98"
    assert create(client, "L2", "abcDEF123").status_code == 201  # per location
    assert sb.state.conversations()[("L1", "abcDEF123")] == first


def test_search_by_contact_and_location(sandbox: SandboxFactory) -> None:
    _, client = sandbox()
    ids = {c: create(client, "L1", c).json()["conversation"]["id"] for c in ("C1", "C2")}
    create(client, "L2", "C1")
    r = client.get("/conversations/search", params={"locationId": "L1", "contactId": "C2"})
    assert r.status_code == 200
    assert all(h in r.headers for h in RATE_HEADERS)
    body = r.json()
    assert body["total"] == 1
    hit = body["conversations"][0]
    assert (hit["id"], hit["contactId"], hit["locationId"]) == (ids["C2"], "C2", "L1")
    everything = client.get("/conversations/search", params={"locationId": "L1"}).json()
    assert everything["total"] == 2
    assert {c["id"] for c in everything["conversations"]} == set(ids.values())
    none = client.get("/conversations/search", params={"locationId": "L1", "contactId": "nope"})
    assert none.json() == {"conversations": [], "total": 0}
    missing = client.get("/conversations/search")
    assert missing.status_code == 422
    assert "locationId must be a string" in missing.json()["message"]


def test_search_lags_fresh_conversations(sandbox: SandboxFactory) -> None:
    _, client = sandbox(search_lag_s=0.3)
    create(client, "L1", "C1")
    params = {"locationId": "L1", "contactId": "C1"}
    assert client.get("/conversations/search", params=params).json()["total"] == 0
    assert create(client, "L1", "C1").status_code == 400  # exists even though unsearchable
    time.sleep(0.35)
    assert client.get("/conversations/search", params=params).json()["total"] == 1


def test_unknown_route_is_json_404(sandbox: SandboxFactory) -> None:
    _, client = sandbox()
    r = client.get("/contacts/")
    assert r.status_code == 404
    assert r.json()["statusCode"] == 404
    assert client.get("/conversations/").status_code == 404


def test_latency_delays_answers(sandbox: SandboxFactory) -> None:
    _, client = sandbox(latency_ms=120, latency_jitter_ms=30)
    started = time.perf_counter()
    assert create(client).status_code == 201
    assert time.perf_counter() - started >= 0.12


# -- rate limits -----------------------------------------------------------------------------


def test_burst_window_429_with_headers_and_retry_after(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(rate_max=3, rate_interval_ms=400)
    remaining = [create(client, "L1", f"C{i}").headers[H_REMAINING] for i in range(3)]
    assert remaining == ["2", "1", "0"]
    r = create(client, "L1", "C3")
    assert r.status_code == 429
    assert r.json() == {"statusCode": 429, "message": "Too Many Requests"}
    assert r.headers[H_MAX] == "3"
    assert r.headers[H_INTERVAL_MS] == "400"
    assert r.headers[H_REMAINING] == "0"
    assert r.headers[H_LIMIT_DAILY] == "200000"
    assert r.headers[H_DAILY_REMAINING] == "199997"  # 429s take no quota
    assert r.headers[H_RETRY_AFTER] == "1"
    assert create(client, "L2", "C3").status_code == 201  # buckets are per location
    time.sleep(0.42)
    assert create(client, "L1", "C3").status_code == 201
    assert ("L1", "C3") in sb.state.conversations()


def test_429_without_retry_after_when_disabled(sandbox: SandboxFactory) -> None:
    _, client = sandbox(rate_max=1, rate_interval_ms=5000, retry_after=False)
    assert create(client, "L1", "C1").status_code == 201
    r = create(client, "L1", "C2")
    assert r.status_code == 429
    assert H_RETRY_AFTER not in r.headers
    assert all(h in r.headers for h in RATE_HEADERS)


def test_search_counts_against_the_window(sandbox: SandboxFactory) -> None:
    _, client = sandbox(rate_max=2, rate_interval_ms=5000)
    create(client, "L1", "C1")
    assert client.get("/conversations/search", params={"locationId": "L1"}).status_code == 200
    assert client.get("/conversations/search", params={"locationId": "L1"}).status_code == 429


def test_rate_max_zero_is_unlimited(sandbox: SandboxFactory) -> None:
    _, client = sandbox(rate_max=0)
    answers = [create(client, "L1", f"C{i}") for i in range(150)]
    assert {r.status_code for r in answers} == {201}
    assert int(answers[-1].headers[H_MAX]) >= 1_000_000
    assert all(h in answers[-1].headers for h in RATE_HEADERS)


def test_daily_quota(sandbox: SandboxFactory) -> None:
    _, client = sandbox(daily_limit=2)
    assert create(client, "L1", "C1").headers[H_DAILY_REMAINING] == "1"
    assert create(client, "L1", "C2").headers[H_DAILY_REMAINING] == "0"
    r = create(client, "L1", "C3")
    assert r.status_code == 429
    assert r.headers[H_DAILY_REMAINING] == "0"
    assert r.headers[H_LIMIT_DAILY] == "2"
    assert int(r.headers[H_RETRY_AFTER]) >= 1
    assert create(client, "L2", "C3").status_code == 201


async def test_250_concurrent_requests_exactly_100_pass() -> None:
    running = await start_sandbox(
        SandboxConfig(rate_max=100, rate_interval_ms=5000), shutdown_timeout=0.5
    )
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

            async def one(i: int) -> int:
                url = f"{running.base_url}/conversations/"
                body = {"locationId": "L1", "contactId": f"C{i}"}
                async with session.post(url, json=body) as r:
                    await r.read()
                    return r.status

            statuses = Counter(await asyncio.gather(*(one(i) for i in range(250))))
        assert statuses == {201: 100, 429: 150}
        assert len(running.state.conversations) == 100
        assert running.state.status_counts == {201: 100, 429: 150}
    finally:
        await running.close()


# -- faults ----------------------------------------------------------------------------------


def last_fault(sb: SandboxThread) -> tuple[int, str | None]:
    record = sb.state.requests()[-1]
    return record.status, record.fault


def test_fault_500_does_not_create(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_500=1.0)
    r = create(client)
    assert r.status_code == 500
    assert r.json() == {"statusCode": 500, "message": "Internal Server Error"}
    assert sb.state.conversations() == {}
    assert last_fault(sb) == (500, "500")


def test_fault_502_after_create_creates(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_502_after_create=1.0)
    r = create(client)
    assert r.status_code == 502
    with pytest.raises(ValueError):
        r.json()
    assert ("L1", "C1") in sb.state.conversations()
    assert last_fault(sb) == (502, "502_after_create")
    sb.update_config(fault_502_after_create=0.0)
    assert create(client).status_code == 400


def test_fault_broken_body_creates(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_broken_body=1.0)
    r = create(client)
    assert r.status_code == 201
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert ("L1", "C1") in sb.state.conversations()
    assert last_fault(sb) == (201, "broken_body")


def test_fault_drop_closes_without_answer(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_drop=1.0)
    with pytest.raises(httpx.TransportError):
        create(client)
    assert sb.state.conversations() == {}
    assert last_fault(sb) == (0, "drop")


def test_fault_hang_times_out_client_but_creates(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_hang=1.0, hang_s=0.6)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/conversations/", json={"locationId": "L1", "contactId": "C1"}, timeout=0.15)
    assert ("L1", "C1") in sb.state.conversations()
    started = time.perf_counter()
    r = client.post("/conversations/", json={"locationId": "L1", "contactId": "C1"})
    assert r.status_code == 400  # a patient client gets the (late) real answer
    assert time.perf_counter() - started >= 0.55
    assert last_fault(sb) == (400, "hang")


def test_hang_does_not_delay_shutdown() -> None:
    sb = SandboxThread(SandboxConfig(fault_hang=1.0, hang_s=30), shutdown_timeout=5).start()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{sb.base_url}/conversations/",
            json={"locationId": "L1", "contactId": "C1"},
            headers=HEADERS,
            timeout=0.1,
        )
    started = time.perf_counter()
    sb.stop()
    assert time.perf_counter() - started < 2


def test_fault_429_with_and_without_retry_after(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_429=1.0)
    r = create(client)
    assert r.status_code == 429
    assert r.headers[H_RETRY_AFTER] == "1"
    assert r.headers[H_REMAINING] == "100"  # the window itself was empty
    assert sb.state.conversations() == {}
    assert last_fault(sb) == (429, "429")
    sb.update_config(retry_after=False)
    r = create(client)
    assert r.status_code == 429
    assert H_RETRY_AFTER not in r.headers


def test_faults_are_seeded_and_apply_to_create_only(sandbox: SandboxFactory) -> None:
    runs = []
    for _ in range(2):
        _, client = sandbox(fault_500=0.5, seed=7, rate_max=0)
        runs.append([create(client, "L1", f"C{i}").status_code for i in range(40)])
        params = {"locationId": "L1"}
        searches = [client.get("/conversations/search", params=params) for _ in range(10)]
        assert {s.status_code for s in searches} == {200}
    assert runs[0] == runs[1]
    assert set(runs[0]) == {201, 500}


# -- admin and in-process access -------------------------------------------------------------


def test_admin_endpoints(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(rate_max=50)
    assert client.get("/_sandbox/health").status_code == 200
    conv_id = create(client, "L1", "C1").json()["conversation"]["id"]
    create(client, "L1", "C1")
    httpx.get(f"{sb.base_url}/conversations/search?locationId=L1")  # 401, no headers
    state = client.get("/_sandbox/state").json()
    assert state["conversations"] == [{"locationId": "L1", "contactId": "C1", "id": conv_id}]
    assert [(q["method"], q["status"]) for q in state["requests"]] == [
        ("POST", 201),
        ("POST", 400),
        ("GET", 401),
    ]
    assert state["requests"][0]["path"] == "/conversations/"
    assert state["requests"][0]["locationId"] == "L1"
    assert state["requests"][0]["fault"] is None
    assert state["config"]["rate_max"] == 50
    assert client.get("/_sandbox/state", params={"since": 2}).json()["requests"][0]["status"] == 401
    stats = client.get("/_sandbox/stats").json()
    assert stats["requests"] == 3
    assert stats["by_status"] == {"201": 1, "400": 1, "401": 1}
    assert stats["conversations"] == 1

    updated = client.post("/_sandbox/config", json={"rate_max": 1, "search_lag_s": 1})
    assert updated.status_code == 200 and updated.json()["rate_max"] == 1
    assert sb.config.search_lag_s == 1.0
    assert client.post("/_sandbox/config", json={"nope": 1}).status_code == 400
    assert client.post("/_sandbox/config", json={"rate_max": -1}).status_code == 400
    assert sb.config.rate_max == 1
    assert create(client, "L1", "C2").status_code == 429  # window kept, new max applies

    assert client.post("/_sandbox/reset").status_code == 200
    assert client.get("/_sandbox/stats").json()["requests"] == 0
    assert sb.state.conversations() == {} and sb.state.requests() == []
    assert create(client, "L1", "C2").status_code == 201  # window cleared too


def test_thread_accessors_and_seeding(sandbox: SandboxFactory) -> None:
    sb, client = sandbox()
    ids = sb.seed_conversations([("L1", "old")])
    assert create(client, "L1", "old").status_code == 400
    found = client.get("/conversations/search", params={"locationId": "L1", "contactId": "old"})
    assert found.json()["conversations"][0]["id"] == ids[("L1", "old")]
    assert sb.state.conversations() == ids
    assert [r.status for r in sb.state.requests()] == [400, 200]
    assert sb.state.stats()["by_status"] == {"200": 1, "400": 1}
    seeded = client.post("/_sandbox/conversations", json=[{"locationId": "L2", "contactId": "x"}])
    assert seeded.status_code == 200 and ID_RE.match(seeded.json()[0]["id"])
    sb.reset()
    assert sb.state.conversations() == {}
    with pytest.raises(ValueError):
        sb.update_config(bogus=1)


def test_module_entry_point_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.sandbox",
            "--rate",
            "2/1s",
            "--config-json",
            '{"create_status": 200}',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"sandbox listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, line
        base = match.group(1)
        with httpx.Client(base_url=base, headers=HEADERS) as client:
            assert create(client).status_code == 200
            assert client.get("/_sandbox/config").json()["rate_max"] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
