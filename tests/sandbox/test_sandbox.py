"""The sandbox server, over a real loopback socket, with plain httpx/aiohttp clients.

Never uses the project's client: the sandbox must be checked against the API reference,
not against the code it is meant to test.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from pipeline.core.constants import (
    API_VERSIONS,
    DEFAULT_API_VERSION,
    H_DAILY_REMAINING,
    H_INTERVAL_MS,
    H_LIMIT_DAILY,
    H_MAX,
    H_REMAINING,
    H_RETRY_AFTER,
    SCOPE_READ,
    SCOPE_WRITE,
)
from pipeline.sandbox import (
    DEFAULT_TOKEN,
    SandboxConfig,
    SandboxThread,
    parse_rate,
    start_sandbox,
    token_label,
)
from pipeline.sandbox.bodies import TraceIds
from pipeline.sandbox.config import config_from_options

RATE_HEADERS = (H_LIMIT_DAILY, H_DAILY_REMAINING, H_INTERVAL_MS, H_MAX, H_REMAINING)
HEADERS = {
    "Authorization": f"Bearer {DEFAULT_TOKEN}",
    "Version": DEFAULT_API_VERSION,
    "Accept": "application/json",
}
ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The live API's words (reference README), spelled out here rather than taken from the sandbox.
EXISTS_START = "Conversation with the contact id:"
EXISTS_MARK = " already exists!"
SCOPE_MESSAGE = "The token is not authorized for this scope."

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


def trace_id_of(body: dict[str, Any]) -> str:
    """The body's traceId, checked to be its last key and a canonical uuid4 string."""
    assert list(body)[-1] == "traceId", body
    trace_id = body["traceId"]
    assert isinstance(trace_id, str) and UUID4_RE.match(trace_id), trace_id
    parsed = uuid.UUID(trace_id)
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == trace_id
    return trace_id


def json_without_trace(r: httpx.Response) -> dict[str, Any]:
    """The JSON body with its (checked) traceId removed, for exact comparisons."""
    body = r.json()
    trace_id_of(body)
    del body["traceId"]
    return dict(body)


def assert_exists_answer(r: httpx.Response, contact: str) -> str:
    """The live "already exists" answer: the documented text, a space, the body's traceId."""
    assert r.status_code == 400
    body = r.json()
    assert list(body) == ["statusCode", "message", "traceId"]
    trace_id = trace_id_of(body)
    assert body["statusCode"] == 400
    assert body["message"].startswith(f"{EXISTS_START}{contact}{EXISTS_MARK}")
    assert body["message"] == f"{EXISTS_START}{contact}{EXISTS_MARK} {trace_id}"
    return trace_id


# -- config ---------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = SandboxConfig(
        rate_max=5,
        location_tokens={"L": "t"},
        token_scopes={"t": [SCOPE_WRITE], "u": []},
        fault_500=0.25,
    )
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
        assert json_without_trace(r) == expected


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
    assert json_without_trace(r) == {"statusCode": 400, "message": "Version header is required"}


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
        assert json_without_trace(r) == {
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
    trace_id = assert_exists_answer(r, "abcDEF123")
    assert r.json()["message"] == (
        f"Conversation with the contact id:abcDEF123 already exists! {trace_id}"
    )
    assert assert_exists_answer(create(client, "L1", "abcDEF123"), "abcDEF123") != trace_id
    assert all(h in r.headers for h in RATE_HEADERS)
    assert r.headers[H_REMAINING] == "98"  # a duplicate still takes its slot
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
    assert json_without_trace(none) == {"conversations": [], "total": 0}
    missing = client.get("/conversations/search")
    assert missing.status_code == 422
    assert "locationId must be a string" in missing.json()["message"]


@pytest.mark.timing
def test_search_lags_fresh_conversations(sandbox: SandboxFactory) -> None:
    """A conversation is found by search no sooner than the lag after its creation, and soon
    after: stated from the client's clock, which brackets the server's, so it holds however
    slowly a loaded machine answers."""
    lag = 1.0
    _, client = sandbox(search_lag_s=lag)
    params = {"locationId": "L1", "contactId": "C1"}
    before = time.monotonic()  # the conversation is created after this
    create(client, "L1", "C1")
    hidden = client.get("/conversations/search", params=params).json()["total"]
    if time.monotonic() - before < lag:  # asked (and answered) within the lag: not yet found
        assert hidden == 0
    assert_exists_answer(create(client, "L1", "C1"), "C1")  # exists even though unsearchable
    deadline = before + lag + 10
    while client.get("/conversations/search", params=params).json()["total"] == 0:
        assert time.monotonic() < deadline, "never found"
        time.sleep(0.05)
    assert time.monotonic() - before >= lag  # found, and not before the lag had passed


def test_unknown_route_is_json_404(sandbox: SandboxFactory) -> None:
    _, client = sandbox()
    r = client.get("/contacts/")
    assert r.status_code == 404
    assert r.json()["statusCode"] == 404
    assert client.get("/conversations/").status_code == 404


@pytest.mark.timing
def test_latency_delays_answers(sandbox: SandboxFactory) -> None:
    _, client = sandbox(latency_ms=120, latency_jitter_ms=30)
    started = time.perf_counter()
    assert create(client).status_code == 201
    assert time.perf_counter() - started >= 0.12


# -- rate limits -----------------------------------------------------------------------------


@pytest.mark.timing
def test_burst_window_429_with_headers_and_retry_after(sandbox: SandboxFactory) -> None:
    """The window is long enough (4 s) for four requests on a loaded machine, and the slot
    it frees is waited for by asking, not by a sleep sized for an idle one."""
    sb, client = sandbox(rate_max=3, rate_interval_ms=4000)
    first = time.monotonic()  # before the first slot was taken
    remaining = [create(client, "L1", f"C{i}").headers[H_REMAINING] for i in range(3)]
    assert remaining == ["2", "1", "0"]
    r = create(client, "L1", "C3")
    assert time.monotonic() - first < 4.0  # still inside the window...
    assert r.status_code == 429  # ...so refused
    assert json_without_trace(r) == {"statusCode": 429, "message": "Too Many Requests"}
    assert r.headers[H_MAX] == "3"
    assert r.headers[H_INTERVAL_MS] == "4000"
    assert r.headers[H_REMAINING] == "0"
    assert r.headers[H_LIMIT_DAILY] == "200000"
    assert r.headers[H_DAILY_REMAINING] == "199997"  # 429s take no quota
    assert 1 <= int(r.headers[H_RETRY_AFTER]) <= 4  # when the first slot frees, in seconds
    assert create(client, "L2", "C3").status_code == 201  # buckets are per location
    while (r := create(client, "L1", "C3")).status_code == 429:  # a slot frees 4 s after...
        assert time.monotonic() - first < 4.0 + 10, "the window never moved on"
        time.sleep(0.05)
    assert r.status_code == 201
    assert time.monotonic() - first >= 4.0  # ...its request, and not before
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
    assert json_without_trace(r) == {"statusCode": 500, "message": "Internal Server Error"}
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
    assert_exists_answer(create(client), "C1")


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


@pytest.mark.timing
def test_fault_hang_times_out_client_but_creates(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(fault_hang=1.0, hang_s=0.6)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/conversations/", json={"locationId": "L1", "contactId": "C1"}, timeout=0.15)
    assert ("L1", "C1") in sb.state.conversations()
    started = time.perf_counter()
    r = client.post("/conversations/", json={"locationId": "L1", "contactId": "C1"})
    assert_exists_answer(r, "C1")  # a patient client gets the (late) real answer
    assert time.perf_counter() - started >= 0.55
    assert last_fault(sb) == (400, "hang")


@pytest.mark.timing
def test_hang_does_not_delay_shutdown() -> None:
    sb = SandboxThread(SandboxConfig(fault_hang=1.0, hang_s=30), shutdown_timeout=10).start()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{sb.base_url}/conversations/",
            json={"locationId": "L1", "contactId": "C1"},
            headers=HEADERS,
            timeout=0.1,
        )
    started = time.perf_counter()
    sb.stop()
    assert time.perf_counter() - started < 5  # neither the hang (30 s) nor the grace (10 s)


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


# -- traceId, API versions, scopes, token labels ---------------------------------------------


def test_trace_ids_are_fresh_uuid4_strings() -> None:
    new = TraceIds()
    ids = [new() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for trace_id in ids[:2000]:
        trace_id_of({"traceId": trace_id})
    assert TraceIds()() not in ids  # each sandbox draws its own


def create_with(
    client: httpx.Client, headers: dict[str, str], location: str = "L1", contact: str = "C1"
) -> httpx.Response:
    """A create with some of the client's headers replaced."""
    return client.post(
        "/conversations/", json={"locationId": location, "contactId": contact}, headers=headers
    )


def test_every_json_answer_carries_a_unique_trace_id(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(
        rate_max=0,
        tokens=[DEFAULT_TOKEN, "reader", "other"],
        token_scopes={"reader": [SCOPE_READ]},
        location_tokens={"LB": DEFAULT_TOKEN},
    )
    search = "/conversations/search"
    answers: list[tuple[int, httpx.Response]] = [
        (201, create(client, "L1", "C1")),
        (400, create(client, "L1", "C1")),  # already exists
        (200, client.get(search, params={"locationId": "L1", "contactId": "C1"})),
        (200, client.get(search, params={"locationId": "L1", "contactId": "nobody"})),
        (401, create_with(client, {"Authorization": "Bearer wrong"})),
        (401, client.get(search, params={"locationId": "L1"}, headers={"Authorization": ""})),
        (401, create_with(client, {"Authorization": "Bearer reader"})),  # scope
        (400, create_with(client, {"Version": ""})),
        (400, create_with(client, {"Version": "2099-01-01"})),
        (400, client.get(search, params={"locationId": "L1"}, headers={"Version": "v2"})),
        (422, client.post("/conversations/", json={"locationId": "L1"})),
        (422, client.get(search)),
        (403, create_with(client, {"Authorization": "Bearer other"}, "LB")),
        (404, client.get("/contacts/")),
        (404, client.post("/conversations/search", json={})),
    ]
    sb.update_config(fault_500=1.0)
    answers.append((500, create(client, "L2", "C1")))
    sb.update_config(fault_500=0.0, fault_429=1.0)
    answers.append((429, create(client, "L2", "C1")))  # injected
    sb.update_config(fault_429=0.0, fault_hang=1.0, hang_s=0.01)
    answers.append((201, create(client, "L2", "C2")))  # late, but a real answer
    sb.update_config(fault_hang=0.0, create_status=200, rate_max=1)
    answers.append((200, create(client, "L3", "C1")))
    answers.append((429, create(client, "L3", "C2")))  # the window's own
    answers.append((429, client.get(search, params={"locationId": "L3"})))

    trace_ids = []
    for status, r in answers:
        assert r.status_code == status, (status, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        trace_ids.append(trace_id_of(r.json()))
    assert len(set(trace_ids)) == len(trace_ids)


@pytest.mark.parametrize("version", API_VERSIONS)
def test_each_documented_version_is_accepted(sandbox: SandboxFactory, version: str) -> None:
    _, client = sandbox()
    assert set(API_VERSIONS) == {"v3", "2023-02-21", "2021-07-28", "2021-04-15"}
    assert create_with(client, {"Version": version}).status_code == 201
    found = client.get(
        "/conversations/search",
        params={"locationId": "L1", "contactId": "C1"},
        headers={"Version": version},
    )
    assert found.status_code == 200 and found.json()["total"] == 1


@pytest.mark.parametrize("version", ["2021-07-29", "V3", "v2", "2021-07-28x", "latest"])
def test_other_versions_are_refused_before_validation(
    sandbox: SandboxFactory, version: str
) -> None:
    sb, client = sandbox(rate_max=2, rate_interval_ms=60_000)
    expected = {"statusCode": 400, "message": "version header is invalid"}
    refused = [
        create_with(client, {"Version": version}),
        client.get(
            "/conversations/search", params={"locationId": "L1"}, headers={"Version": version}
        ),
    ]
    for r in refused:
        assert r.status_code == 400
        assert json_without_trace(r) == expected
        assert r.headers[H_REMAINING] == "2"  # rate headers, no slot taken
    # Checked before the body (a bad body still gets the version answer) ...
    bad_body = client.post("/conversations/", json={}, headers={"Version": version})
    assert bad_body.status_code == 400 and json_without_trace(bad_body) == expected
    # ... and after authentication.
    unknown = create_with(client, {"Version": version, "Authorization": "Bearer wrong"})
    assert unknown.status_code == 401
    assert [r.status for r in sb.state.requests()] == [400, 400, 400, 401]
    assert [create(client, "L1", f"C{i}").status_code for i in range(3)] == [201, 201, 429]


def test_blank_version_is_still_required(sandbox: SandboxFactory) -> None:
    _, client = sandbox()
    for r in (
        create_with(client, {"Version": ""}),
        client.get("/conversations/search", params={"locationId": "L1"}, headers={"Version": ""}),
    ):
        assert r.status_code == 400
        assert json_without_trace(r) == {"statusCode": 400, "message": "Version header is required"}


SCOPE_TOKENS = {
    "writer": [SCOPE_WRITE],
    "reader": [SCOPE_READ],
    "both": [SCOPE_READ, SCOPE_WRITE, "contacts.readonly"],
    "neither": ["contacts.readonly"],
}
SCOPE_ANSWER = {"statusCode": 401, "message": SCOPE_MESSAGE, "error": "Unauthorized"}


def scoped_sandbox(
    sandbox: SandboxFactory, rate_max: int = 2
) -> tuple[SandboxThread, httpx.Client]:
    return sandbox(
        tokens=[DEFAULT_TOKEN, *SCOPE_TOKENS],
        token_scopes=SCOPE_TOKENS,
        rate_max=rate_max,
        rate_interval_ms=60_000,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_without_write_scope_is_401(sandbox: SandboxFactory) -> None:
    sb, client = scoped_sandbox(sandbox)
    for token in ("reader", "neither"):
        r = create_with(client, bearer(token))
        assert r.status_code == 401
        assert json_without_trace(r) == SCOPE_ANSWER
        assert r.headers[H_REMAINING] == "2" and r.headers[H_DAILY_REMAINING] == "200000"
        # The scope is checked before the body, after the Version header.
        bad_body = client.post("/conversations/", json={}, headers=bearer(token))
        assert bad_body.status_code == 401 and json_without_trace(bad_body) == SCOPE_ANSWER
        no_version = create_with(client, {**bearer(token), "Version": "nope"})
        assert no_version.status_code == 400
    assert sb.state.conversations() == {}
    # No slot was taken: both allowed tokens still get the whole window.
    assert create_with(client, bearer("writer"), contact="C1").status_code == 201
    assert create_with(client, bearer("both"), contact="C2").status_code == 201
    assert create_with(client, bearer(DEFAULT_TOKEN), contact="C3").status_code == 429


def test_search_without_read_scope_is_401(sandbox: SandboxFactory) -> None:
    sb, client = scoped_sandbox(sandbox, rate_max=3)
    assert create_with(client, bearer("writer")).status_code == 201
    params = {"locationId": "L1", "contactId": "C1"}
    for token in ("writer", "neither"):
        r = client.get("/conversations/search", params=params, headers=bearer(token))
        assert r.status_code == 401
        assert json_without_trace(r) == SCOPE_ANSWER
        assert r.headers[H_REMAINING] == "2"  # only the create holds a slot
        missing = client.get("/conversations/search", headers=bearer(token))
        assert missing.status_code == 401 and json_without_trace(missing) == SCOPE_ANSWER
    # A token that can create but not search cannot resolve "already exists".
    assert_exists_answer(create_with(client, bearer("writer")), "C1")
    found = client.get("/conversations/search", params=params, headers=bearer("reader"))
    assert found.status_code == 200 and found.json()["total"] == 1
    assert [r.status for r in sb.state.requests()] == [201, 401, 401, 401, 401, 400, 200]


def test_token_scopes_change_at_runtime(sandbox: SandboxFactory) -> None:
    sb, client = sandbox()
    updated = client.post("/_sandbox/config", json={"token_scopes": {DEFAULT_TOKEN: []}})
    assert updated.status_code == 200
    assert updated.json()["token_scopes"] == {DEFAULT_TOKEN: []}
    assert client.get("/_sandbox/config").json()["token_scopes"] == {DEFAULT_TOKEN: []}
    assert json_without_trace(create(client)) == SCOPE_ANSWER
    bad = client.post("/_sandbox/config", json={"token_scopes": {DEFAULT_TOKEN: "all"}})
    assert bad.status_code == 400 and "token_scopes" in bad.json()["message"]
    sb.update_config(token_scopes={DEFAULT_TOKEN: [SCOPE_WRITE]})
    assert create(client).status_code == 201
    sb.update_config(token_scopes={})
    assert client.get("/conversations/search", params={"locationId": "L1"}).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"t": SCOPE_WRITE},
        {"t": [SCOPE_WRITE, ""]},
        {"t": [7]},
        {"": [SCOPE_WRITE]},
        {"t": None},
    ],
)
def test_token_scopes_are_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="token_scopes"):
        SandboxConfig.from_dict({"token_scopes": bad})


def test_token_scopes_are_copied_and_reach_the_cli() -> None:
    scopes = {"t": [SCOPE_WRITE]}
    config = SandboxConfig(token_scopes=scopes)
    scopes["t"].append(SCOPE_READ)
    assert config.token_scopes == {"t": [SCOPE_WRITE]}
    assert config.to_dict()["token_scopes"] == {"t": [SCOPE_WRITE]}
    given = config_from_options(
        config_json=json.dumps({"token_scopes": {"t": [SCOPE_READ]}}), extra_tokens=["extra"]
    )
    assert given.token_scopes == {"t": [SCOPE_READ]}
    assert given.tokens == [DEFAULT_TOKEN, "extra"]


def test_request_log_labels_tokens_without_holding_them(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(tokens=["tok-a", "tok-b"])
    create_with(client, bearer("tok-a"), contact="C1")
    create_with(client, bearer("tok-b"), contact="C2")
    client.get("/conversations/search", params={"locationId": "L1"}, headers=bearer("tok-a"))
    create_with(client, bearer("intruder"))
    create_with(client, {"Authorization": ""})
    client.get("/contacts/", headers=bearer("tok-b"))
    sb.update_config(rate_max=7)  # labels survive config updates
    create_with(client, bearer("tok-a"), contact="C3")

    label_a, label_b = token_label("tok-a"), token_label("tok-b")
    assert re.fullmatch(r"[0-9a-f]{8}", label_a) and label_a != label_b
    # Stable across processes and sandboxes (not ``hash``, which is salted per process): the
    # labels of fixed tokens, computed once and written down here.
    assert (label_a, label_b, token_label("intruder")) == ("2cb5e64e", "9258948e", "b6c26b6e")
    records = sb.state.requests()
    assert [(r.status, r.token) for r in records] == [
        (201, label_a),
        (201, label_b),
        (200, label_a),
        (401, token_label("intruder")),
        (401, None),
        (404, label_b),
        (201, label_a),
    ]
    per_token = Counter(r.token for r in records if r.status < 300)
    assert per_token == {label_a: 3, label_b: 1}  # what a client test would count
    state = client.get("/_sandbox/state").json()
    assert [q["token"] for q in state["requests"]] == [r.token for r in records]
    log_text = json.dumps(state["requests"])
    for secret in ("tok-a", "tok-b", "intruder"):
        assert secret not in log_text
    # A label is the same in every sandbox, so a test can compute it up front.
    other, other_client = sandbox(tokens=[])
    create_with(other_client, bearer("tok-a"))
    assert other.state.requests()[-1].token == label_a


# -- admin and in-process access -------------------------------------------------------------


def test_admin_endpoints(sandbox: SandboxFactory) -> None:
    sb, client = sandbox(rate_max=50)
    assert client.get("/_sandbox/health").status_code == 200
    conv_id = create(client, "L1", "C1").json()["conversation"]["id"]
    assert_exists_answer(create(client, "L1", "C1"), "C1")
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
    assert_exists_answer(create(client, "L1", "old"), "old")
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
            "--port",
            "0",
            "--rate",
            "2/1s",
            "--config-json",
            '{"create_status": 200, "token_scopes": {"sandbox-token": ["conversations.write"]}}',
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
            config = client.get("/_sandbox/config").json()
            assert config["rate_max"] == 2
            assert config["token_scopes"] == {DEFAULT_TOKEN: [SCOPE_WRITE]}
            refused = client.get("/conversations/search", params={"locationId": "L1"})
            assert refused.status_code == 401 and refused.json()["message"] == SCOPE_MESSAGE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_sandbox_shares_only_the_constants_with_the_client() -> None:
    """It keeps its own copies of what it has in common with the client (the rate grammar,
    the uvloop runner), so that it tests the client rather than agreeing with it."""
    folder = Path(__file__).resolve().parents[2] / "pipeline" / "sandbox"
    imported: set[str] = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name.split(".")[0] == "pipeline"}
    assert ours - {"pipeline.core.constants"} == {
        n for n in ours if n.startswith("pipeline.sandbox")
    }
