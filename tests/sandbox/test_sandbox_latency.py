"""The sandbox's latency distributions: the draws themselves (thousands, without sleeping),
their config and flags, and what a client sees over a real loopback socket.

A client tuned against a constant latency can be wrong against a real network, where answers
vary, a few take many times the median, and requests arrive in another order than they
left; these tests pin down that the sandbox now plays that network, reproducibly.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from pipeline.core.constants import DEFAULT_API_VERSION
from pipeline.sandbox import DEFAULT_TOKEN, SandboxConfig, SandboxThread, start_sandbox
from pipeline.sandbox.config import config_from_options
from pipeline.sandbox.latency import LOGNORMAL_CAP, Z99, Latency, parse_spread

HEADERS = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Version": DEFAULT_API_VERSION}
DRAWS = 20_000


def draws(latency: Latency, seed: int = 1, n: int = DRAWS) -> list[float]:
    rng = random.Random(seed)
    return [latency.draw_ms(rng) for _ in range(n)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the draws ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "latency",
    [
        Latency("uniform", 80.0, spread=0.5),
        Latency("lognormal", 80.0, sigma=0.7),
        Latency("constant", 80.0, jitter_ms=30.0),
    ],
)
def test_a_seed_replays_the_same_latencies(latency: Latency) -> None:
    assert draws(latency, seed=7, n=500) == draws(latency, seed=7, n=500)
    assert draws(latency, seed=7, n=500) != draws(latency, seed=8, n=500)


def test_a_constant_latency_draws_no_random_number() -> None:
    """So a sandbox without varying latency replays the fault sequences it always did."""
    rng = random.Random(3)
    before = rng.getstate()
    for latency in (Latency("constant", 80.0), Latency("uniform", 0.0), Latency("uniform", 8, 0)):
        assert latency.draw_ms(rng) == latency.ms
        assert not latency.varies
    assert rng.getstate() == before


def test_uniform_draws_stay_within_the_spread_around_the_mean() -> None:
    values = draws(Latency("uniform", 80.0, spread=0.5))
    assert 40.0 <= min(values) < 41.0
    assert 119.0 < max(values) <= 120.0
    assert statistics.fmean(values) == pytest.approx(80.0, rel=0.01)


@pytest.mark.parametrize("sigma", [0.5, 0.7])
def test_lognormal_draws_have_the_median_and_the_tail_asked_for(sigma: float) -> None:
    values = draws(Latency("lognormal", 80.0, sigma=sigma))
    median = statistics.median(values)
    assert median == pytest.approx(80.0, rel=0.03)
    # sigma 0.7: p99 about 5 x the median, the long tail of a real network's round trips
    assert quantile(values, 0.99) / median == pytest.approx(math.exp(Z99 * sigma), rel=0.1)
    assert min(values) > 0


def test_a_lognormal_draw_is_capped() -> None:
    values = draws(Latency("lognormal", 10.0, sigma=3.0), n=5000)
    assert max(values) == pytest.approx(10.0 * LOGNORMAL_CAP)
    assert sum(1 for v in values if v >= 10.0 * LOGNORMAL_CAP) > 10


def test_jitter_adds_to_any_distribution_and_the_split_keeps_the_draw() -> None:
    jittered = draws(Latency("uniform", 80.0, spread=0.25, jitter_ms=20.0), n=5000)
    assert min(jittered) >= 60.0 and max(jittered) <= 120.0
    latency = Latency("lognormal", 80.0, sigma=0.5, inbound_share=0.25)
    inbound, outbound = latency.split_s(random.Random(5))
    total = latency.draw_ms(random.Random(5)) / 1000
    assert inbound + outbound == pytest.approx(total)
    assert inbound == pytest.approx(total * 0.25)


def test_parse_spread() -> None:
    assert parse_spread("50%") == 0.5
    assert parse_spread(" 0.25 ") == 0.25
    assert parse_spread("100 %") == 1.0
    for bad in ("150%", "1.5", "-0.1", "wide", "nan"):
        with pytest.raises(ValueError, match="latency spread"):
            parse_spread(bad)


# -- config and flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"latency_distribution": "normal"}, "latency_distribution"),
        ({"latency_distribution": 3}, "latency_distribution"),
        ({"latency_spread": 1.5}, "latency_spread"),
        ({"latency_spread": -0.1}, "latency_spread"),
        ({"latency_sigma": -1}, "latency_sigma"),
        ({"latency_sigma": "wide"}, "latency_sigma"),
        ({"latency_inbound_share": 1.2}, "latency_inbound_share"),
        ({"latency_ms": math.inf}, "latency_ms"),
    ],
)
def test_bad_latency_settings_are_refused_by_name(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SandboxConfig.from_dict(fields)


def test_latency_settings_round_trip_and_build_one_distribution() -> None:
    config = SandboxConfig.from_dict(
        {"latency_ms": 80, "latency_distribution": "lognormal", "latency_sigma": 0.7, "seed": 4}
    )
    assert SandboxConfig.from_dict(config.to_dict()) == config
    assert "latency" not in config.to_dict()  # the built distribution is not a setting
    assert config.latency == Latency("lognormal", 80.0, spread=0.5, sigma=0.7)
    assert config.latency.varies
    assert not SandboxConfig(latency_ms=80).latency.varies  # constant, as it always was


def test_the_flags_pick_the_distribution() -> None:
    uniform = config_from_options(latency_ms=80, latency_spread="50%", seed=9)
    assert (uniform.latency_distribution, uniform.latency_spread, uniform.seed) == (
        "uniform",
        0.5,
        9,
    )
    lognormal = config_from_options(
        config_json='{"latency_distribution": "uniform", "latency_ms": 600}', latency_sigma=0.7
    )
    assert (lognormal.latency_distribution, lognormal.latency_sigma) == ("lognormal", 0.7)
    assert lognormal.latency_ms == 600  # from --config-json, the flag varies it
    with pytest.raises(ValueError, match="give one"):
        config_from_options(latency_ms=80, latency_spread="0.5", latency_sigma=0.5)
    with pytest.raises(ValueError, match="--latency-spread varies"):
        config_from_options(latency_spread="50%")
    with pytest.raises(ValueError, match="latency spread"):
        config_from_options(latency_ms=80, latency_spread="150%")


# -- over a real socket -------------------------------------------------------------------


@pytest.fixture
def varied() -> Iterator[tuple[SandboxThread, httpx.Client]]:
    config = SandboxConfig(
        tokens=[DEFAULT_TOKEN],
        latency_ms=60.0,
        latency_distribution="uniform",
        latency_spread=0.8,
        seed=11,
    )
    with (
        SandboxThread(config, shutdown_timeout=0.5) as sb,
        httpx.Client(base_url=sb.base_url, headers=HEADERS, timeout=5.0) as client,
    ):
        yield sb, client


def timed_create(client: httpx.Client, contact: str) -> float:
    started = time.perf_counter()
    answer = client.post("/conversations/", json={"locationId": "L1", "contactId": contact})
    assert answer.status_code == 201
    return time.perf_counter() - started


@pytest.mark.timing
def test_a_uniform_latency_answers_in_varying_times(
    varied: tuple[SandboxThread, httpx.Client],
) -> None:
    _, client = varied
    timed_create(client, "warm-up")  # the connection's set-up is not the sandbox's latency
    took = [timed_create(client, f"C{i}") for i in range(15)]
    assert min(took) >= 0.012 * 0.95  # 60 ms x (1 - 0.8), less the clock's grain
    assert max(took) - min(took) > 0.025  # varies (40-ish ms expected), not a fixed delay
    assert max(took) < 0.108 + 0.5  # 60 ms x 1.8, plus a busy machine's slack


@pytest.mark.timing
def test_the_seed_and_reset_replay_the_latencies(
    varied: tuple[SandboxThread, httpx.Client],
) -> None:
    """Server side, where loopback's own noise does not blur the figures: the gap between
    two sequential requests' arrivals holds the first one's way out and the next one's way
    in, and a reset replays both from the seed."""
    sb, client = varied

    def gaps() -> list[float]:
        for i in range(8):
            timed_create(client, f"G{i}")
        arrivals = [r.t for r in sb.state.requests()]
        return [b - a for a, b in itertools.pairwise(arrivals)]

    first = gaps()
    sb.reset()
    second = gaps()
    assert len(first) == len(second) == 7
    assert max(first) - min(first) > 0.015
    # Same draws: each gap is the same up to the client's and loop's own few milliseconds;
    # the median, since on a loaded machine one gap may take a scheduling hiccup (a mean
    # over 7 went 14 ms in a CI run beside other tests).
    assert statistics.median(abs(a - b) for a, b in zip(first, second, strict=True)) < 0.01


@pytest.mark.timing
def test_half_the_latency_passes_before_the_request_arrives() -> None:
    """The server counts a request (its ``t``, its rate slot) after its way in, and answers
    after its way back: with 200 ms constant, it arrives about 100 ms after it was sent."""
    config = SandboxConfig(tokens=[DEFAULT_TOKEN], latency_ms=200.0)
    with (
        SandboxThread(config, shutdown_timeout=0.5) as sb,
        httpx.Client(base_url=sb.base_url, headers=HEADERS, timeout=5.0) as client,
    ):
        client.post("/conversations/", json={"locationId": "L0", "contactId": "warm-up"})
        sent = time.monotonic()
        answer = client.post("/conversations/", json={"locationId": "L1", "contactId": "C1"})
        answered = time.monotonic()
        arrived = sb.state.requests()[-1].t
    assert answer.status_code == 201
    assert 0.1 <= arrived - sent < 0.18
    assert 0.1 <= answered - arrived < 0.18
    assert answered - sent >= 0.2


async def test_requests_arrive_in_another_order_than_they_were_sent() -> None:
    """Twenty requests sent 3 ms apart, each to its own location, with latencies of 10 to
    190 ms: the server's log holds them in another order, as a real network delivers them."""
    config = SandboxConfig(
        latency_ms=100.0, latency_distribution="uniform", latency_spread=0.9, seed=2
    )
    running = await start_sandbox(config, shutdown_timeout=0.5)
    try:
        url = f"{running.base_url}/conversations/"
        async with aiohttp.ClientSession(headers=HEADERS) as session:

            async def send(i: int) -> int:
                await asyncio.sleep(0.003 * i)
                body = {"locationId": f"L{i:02d}", "contactId": "C"}
                async with session.post(url, json=body) as answer:
                    await answer.read()
                    return answer.status

            statuses = await asyncio.gather(*(send(i) for i in range(20)))
        assert set(statuses) == {201}
        sent = [f"L{i:02d}" for i in range(20)]
        arrived = [r.location_id for r in running.state.requests_since(0)]
        assert sorted(arrived, key=str) == sent
        assert arrived != sent
    finally:
        await running.close()


def test_latency_settings_change_at_runtime_over_http(
    varied: tuple[SandboxThread, httpx.Client],
) -> None:
    _, client = varied
    changed = client.post(
        "/_sandbox/config", json={"latency_distribution": "lognormal", "latency_sigma": 0.7}
    )
    assert changed.status_code == 200
    assert changed.json()["latency_distribution"] == "lognormal"
    refused = client.post("/_sandbox/config", json={"latency_distribution": "pareto"})
    assert refused.status_code == 400 and "latency_distribution" in refused.json()["message"]
    assert client.get("/_sandbox/config").json()["latency_sigma"] == 0.7  # nothing changed
