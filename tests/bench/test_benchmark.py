"""The benchmark harness's pure parts, on synthetic request logs: no server, no subprocess;
and the peak-RSS launcher (``python -m bench.processes``), on small programs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from bench.__main__ import chosen_benchmarks, main
from bench.bare import bare_argv
from bench.capacity import Sample
from bench.inputs import even_frame, location_id, scale_frame, write_export_csv, write_frame
from bench.latency import (
    CASES,
    RATIO_TARGET,
    Case,
    parse_summary,
    rows_right,
    span_ratio_verdict,
)
from bench.limit import LIMIT_USED_TARGET, SPAN_RATIO_TARGET, limit_used
from bench.metrics import (
    Request,
    Table,
    bottleneck,
    bursts,
    cpu_share,
    ideal_span,
    is_create,
    limit_metrics,
    max_in_window,
    parse_requests,
    render_markdown,
    render_text,
    send_rate,
    status_counts,
)
from bench.network import Network
from bench.processes import REPO, Child, child_env, require_loopback, run_child


def record(
    t: float, location: str | None = "loc0001", status: int = 201, method: str = "POST"
) -> dict[str, Any]:
    path = "/conversations/" if method == "POST" else "/conversations/search"
    return {
        "t": t,
        "method": method,
        "path": path,
        "locationId": location,
        "status": status,
        "fault": None,
    }


def ideal_log(location: str, start: float, rows: int = 300, latency: float = 0.08) -> list[Any]:
    """Bursts of 100 at once, each 10 s after the previous burst's answers."""
    out = []
    t = start
    for _ in range(rows // 100):
        out += [record(t + i * 1e-4, location) for i in range(100)]
        t += 10.0 + latency
    return out


def test_parse_requests_reads_the_admin_shape() -> None:
    payload = json.loads(json.dumps({"requests": [record(1.5), record(2.0, None, 422)]}))
    requests = parse_requests(payload["requests"])
    assert requests[0] == Request(1.5, "POST", "/conversations/", "loc0001", 201)
    assert requests[1].location_id is None and requests[1].status == 422
    assert all(is_create(r) for r in requests)
    assert not is_create(parse_requests([record(3.0, method="GET")])[0])


def test_ideal_span_counts_intervals_between_bursts() -> None:
    assert ideal_span(300, 100, 10.0) == 20.0
    assert ideal_span(301, 100, 10.0) == 30.0
    assert ideal_span(100, 100, 10.0) == 0.0


def test_max_in_window_is_half_open() -> None:
    # 100 at t=0, 100 at exactly t=10: never more than 100 in any 10 s window.
    times = [0.0] * 100 + [10.0] * 100
    assert max_in_window(times, 10.0) == 100
    # One request a hair early shares the window with the first burst.
    assert max_in_window([0.0] * 100 + [9.999] + [10.0] * 99, 10.0) == 101
    assert max_in_window([], 10.0) == 0
    assert max_in_window([5.0], 10.0) == 1


def test_max_in_window_slides() -> None:
    times = [0.0, 1.0, 2.0, 11.5, 12.0, 12.5, 13.0]
    assert max_in_window(times, 10.0) == 4  # [11.5, 21.5) holds the last four
    assert max_in_window(times, 1.0) == 2
    assert max_in_window(times, 100.0) == 7


def test_bursts_split_on_gaps() -> None:
    assert bursts([], 3.0) == []
    assert bursts([0.0, 0.1, 0.2, 10.0, 10.1, 20.0], 3.0) == [3, 2, 1]
    assert bursts([0.0, 2.0, 4.0, 6.0], 3.0) == [4]  # a slow trickle is one burst


def test_limit_metrics_of_an_ideal_schedule() -> None:
    log = ideal_log("loc0001", 100.0) + ideal_log("loc0002", 100.5)
    metrics = limit_metrics(parse_requests(log), 10.0)
    assert metrics.locations == 2
    assert metrics.requests == 600
    assert metrics.too_many == 0 and metrics.share_429 == 0.0
    expected = 20.16 + 99e-4
    assert metrics.mean_span_s == pytest.approx(expected)
    assert metrics.max_span_s == pytest.approx(expected)
    assert metrics.max_in_window == 100
    assert metrics.sending_s == pytest.approx(0.5 + expected)
    assert metrics.mean_first_burst_s == pytest.approx(99e-4)
    assert metrics.windows == (3, 3)
    assert metrics.extra_window_locations(3) == 0
    assert metrics.late_locations(20.0, 10.0) == 0
    assert metrics.first_bursts_done_s == pytest.approx(0.5 + 99e-4)
    assert metrics.mean_span_s / ideal_span(300, 100, 10.0) < SPAN_RATIO_TARGET


def test_limit_metrics_counts_429s_and_overfull_windows() -> None:
    log = [record(0.0 + i * 0.01) for i in range(100)]
    log += [record(1.5, status=429), record(1.6, status=429)]  # sent too early: refused
    log += [record(10.5 + i * 0.01) for i in range(100)]
    log += [record(3.0, None, 401)]  # no location: not counted
    metrics = limit_metrics(parse_requests(log), 10.0)
    assert metrics.requests == 202
    assert metrics.too_many == 2
    assert metrics.share_429 == pytest.approx(2 / 202)
    assert metrics.max_in_window == 102  # the client sent 102 within 10 s
    assert metrics.max_span_s == pytest.approx(10.5 + 0.99)


def test_limit_metrics_counts_a_window_left_partly_unused() -> None:
    log = [record(0.0 + i * 1e-3) for i in range(100)]
    log += [record(10.1 + i * 1e-3) for i in range(93)]  # 7 slots of window 2 unused
    log += [record(20.2 + i * 1e-3) for i in range(100)]
    log += [record(30.3 + i * 1e-3) for i in range(7)]
    metrics = limit_metrics(parse_requests(log), 10.0)
    assert metrics.windows == (4,)
    assert metrics.extra_window_locations(3) == 1
    assert metrics.late_locations(20.0, 10.0) == 1


def test_limit_metrics_spans_per_location() -> None:
    log = [record(0.0, "a"), record(5.0, "a"), record(1.0, "b"), record(21.0, "b")]
    metrics = limit_metrics(parse_requests(log), 10.0)
    assert (metrics.min_span_s, metrics.max_span_s, metrics.mean_span_s) == (5.0, 20.0, 12.5)
    assert metrics.late_locations(ideal_s=10.0, interval_s=10.0) == 1  # b: 20 s >= 15 s
    assert metrics.late_locations(ideal_s=20.0, interval_s=10.0) == 0
    # With bursts of 1, the first burst is a single request: no spread.
    burst_one = limit_metrics(parse_requests(log), 10.0, burst=1)
    assert burst_one.mean_first_burst_s == 0.0 and burst_one.first_bursts_done_s == 1.0
    # A location with fewer requests than a burst ends its first burst with its last one.
    assert metrics.mean_first_burst_s == 12.5


def test_limit_metrics_refuses_an_empty_log() -> None:
    with pytest.raises(ValueError):
        limit_metrics(parse_requests([record(1.0, None, 401)]), 10.0)


def test_send_rate_counts_creates_between_first_and_last_receipt() -> None:
    log = [record(100.0 + i * 0.001) for i in range(1001)]  # 1001 creates over 1 s
    log.append(record(100.2, method="GET"))  # a search is no create
    rate = send_rate(parse_requests(log))
    assert rate.creates == 1001
    assert rate.seconds == pytest.approx(1.0)
    assert rate.per_s == pytest.approx(1001.0)
    with pytest.raises(ValueError):
        send_rate(parse_requests([record(1.0)]))


def test_status_counts() -> None:
    log = [record(0.0), record(0.1, status=429), record(0.2)]
    assert status_counts(parse_requests(log)) == {201: 2, 429: 1}


def test_cpu_share_interpolates_between_samples() -> None:
    samples = [(0.0, 0.0), (1.0, 0.5), (2.0, 1.5), (3.0, 1.5)]
    assert cpu_share(samples, 1.0, 2.0) == pytest.approx(1.0)
    assert cpu_share(samples, 0.5, 2.5) == pytest.approx((1.5 - 0.25) / 2.0)
    assert cpu_share(samples, 0.0, 3.0) == pytest.approx(0.5)
    assert cpu_share(samples, -1.0, 2.0) is None  # not covered by samples
    assert cpu_share(samples, 2.0, 4.0) is None
    # A process that ended at t=3 used nothing after: 1.5 - 1.0 CPU seconds over 2 s.
    assert cpu_share(samples, 1.5, 3.5, ended=True) == pytest.approx(0.25)
    assert cpu_share(samples[:1], 0.0, 0.0) is None


def test_bottleneck_reading() -> None:
    assert bottleneck(1000, 1900, 0.5, 1.0, 1.5, 4).startswith("the client")
    assert bottleneck(1000, 1050, 0.97, 0.6, 1.6, 4).startswith("the sandbox: its core")
    assert bottleneck(1000, 1000, 0.8, 0.9, 1.9, 2) == (
        "the machine: its 2 cores are 95% busy, the client alone keeps one busy "
        "(a 2nd client adds +0%)"
    )
    assert bottleneck(1000, 1000, 0.8, 0.9, None, 2).startswith("the machine")
    assert bottleneck(1000, 1000, 0.5, 0.5, 1.0, 8) == "the sandbox (a 2nd client adds +0%)"


def test_tables_render_verdicts() -> None:
    table = Table("1. Something")
    table.add("ratio", "1.010", "<= 1.05", True)
    table.add("share", "2.00%", "<= 1%", False)
    table.add("wall | time", "21 s")
    table.notes.append("how it was measured")
    assert [f.verdict for f in table.figures] == ["PASS", "MISS", ""]
    assert table.missed == [table.figures[1]]
    text = render_text([table])
    assert "1. Something" in text and "PASS" in text and "MISS" in text
    assert "* how it was measured" in text
    markdown = render_markdown([table])
    assert "### 1. Something" in markdown
    assert "| ratio | 1.010 | <= 1.05 | **PASS** |" in markdown
    assert "wall \\| time" in markdown  # a pipe inside a cell is escaped
    assert "- how it was measured" in markdown


def test_require_loopback() -> None:
    assert require_loopback("http://127.0.0.1:8099/") == "http://127.0.0.1:8099"
    for url in ("https://127.0.0.1:1", "http://localhost:1", "http://10.0.0.1:80", "x"):
        with pytest.raises(ValueError):
            require_loopback(url)


def test_child_env_drops_settings_and_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_RATE", "1/s")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    env = child_env("sandbox-token")
    assert "GHL_RATE" not in env and "HTTPS_PROXY" not in env
    assert env["GHL_TOKEN"] == "sandbox-token"
    assert "127.0.0.1" in env["NO_PROXY"]
    assert "GHL_TOKEN" not in child_env(None)


def test_even_frame_is_unique_and_even() -> None:
    frame = even_frame(20, 30)
    assert frame.columns == ["contactId", "locationId"]
    assert frame.height == 600
    assert frame["contactId"].n_unique() == 600
    counts = frame["locationId"].value_counts()["count"]
    assert counts.min() == counts.max() == 30
    assert set(frame["locationId"]) == {location_id(k) for k in range(20)}
    assert location_id(0) == "loc0001"


def test_scale_frame_has_about_one_percent_invalid_and_duplicate(tmp_path: Path) -> None:
    frame = scale_frame(20_000, 50)
    assert frame.height == 20_000
    invalid = frame.filter(pl.col("contactId").str.contains(" ") | (pl.col("locationId") == ""))
    assert invalid.height == 200
    valid = frame.join(invalid, on=["contactId", "locationId"], how="anti")
    duplicates = valid.height - valid.unique(["contactId", "locationId"]).height
    assert duplicates == 199
    assert frame.filter(pl.col("locationId") != "")["locationId"].n_unique() == 50
    for name in ("in.csv", "in.parquet"):
        path = write_frame(frame, tmp_path / name)
        back = pl.read_csv(path) if name.endswith(".csv") else pl.read_parquet(path)
        assert back.height == 20_000


def test_export_csv_is_the_same_written_in_chunks(tmp_path: Path) -> None:
    whole = write_export_csv(tmp_path / "whole.csv", 2_500, 20, chunk=10_000)
    parts = write_export_csv(tmp_path / "parts.csv", 2_500, 20, chunk=1_000)
    assert whole.read_bytes() == parts.read_bytes()
    frame = pl.read_csv(parts, infer_schema=False)
    assert frame.columns[:2] == ["Contact Id", "Location Id"] and frame.width == 12
    assert frame.height == 2_500
    rows = scale_frame(2_500, 20)
    assert frame["Contact Id"].to_list() == rows["contactId"].to_list()


def test_peak_rss_is_the_program_s_own_not_the_harness_s(tmp_path: Path) -> None:
    ballast = bytearray(400 * 2**20)  # the harness holding a big input it generated
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident
    program = [sys.executable, "-c", "b = bytearray(60 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    plain = Child(program, child_env(None), tmp_path, "plain", 60).wait()
    measured = run_child(program, child_env(None), tmp_path, "measured", 60)
    del ballast
    assert plain.max_rss_bytes > 400 * 2**20  # inherited across exec: the reason for _rusage
    assert 60 * 2**20 < measured.max_rss_bytes < 200 * 2**20
    assert measured.code == 0 and measured.argv == program and measured.cpu_s > 0


def test_measured_child_keeps_the_exit_code(tmp_path: Path) -> None:
    program = [sys.executable, "-c", "raise SystemExit(3)"]
    assert run_child(program, child_env(None), tmp_path, "three", 60).code == 3


def test_main_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--quick", "--large"])
    with pytest.raises(SystemExit):
        main(["--repeats", "0"])


def test_latency_runs_only_when_named_or_large() -> None:
    assert "latency" not in chosen_benchmarks(None, large=False)
    assert "limit" in chosen_benchmarks(None, large=False)
    assert "latency" in chosen_benchmarks(None, large=True)
    assert chosen_benchmarks(["latency"], large=False) == {"latency"}


def test_parse_summary_reads_the_pipeline_s_last_line() -> None:
    stdout = (
        "30000 rows -> results.parquet\n  created        30000\nlocations: 200\n"
        "30000 requests in 17.71s (1694.0 requests/s), at most 575 in flight, "
        "102.4 ms each on average\n"
    )
    summary = parse_summary(stdout)
    assert summary is not None
    assert (summary.requests, summary.elapsed_s) == (30000, 17.71)
    assert (summary.peak_in_flight, summary.mean_latency_ms) == (575, 102.4)
    assert summary.latency_text == "102.4 ms each"
    with_percentiles = parse_summary(
        "984 requests in 10.96s (89.8 requests/s), at most 281 in flight, "
        "106.3 ms each on average (p50 95.5 ms, p99 295.2 ms)\n"
    )
    assert with_percentiles is not None
    assert (with_percentiles.p50_latency_ms, with_percentiles.p99_latency_ms) == (95.5, 295.2)
    assert with_percentiles.latency_text == "106.3 ms each (p50 95.5, p99 295.2)"
    assert parse_summary("15 requests in 0.07s (217.4 requests/s)\n") is None  # no peak
    assert parse_summary("") is None


def test_latency_ratio_and_ideal() -> None:
    assert span_ratio_verdict(11.0, 10.0) == (pytest.approx(1.1), True)
    assert span_ratio_verdict(11.2, 10.0)[1] is False
    assert span_ratio_verdict(1.0, 0.0)[1] is False
    assert RATIO_TARGET == 1.10
    assert Case(200, Network(80.0)).ideal_s == pytest.approx(10.08)  # 10 s + one round trip
    # a log-normal round trip's mean is above its median
    assert Case(200, Network(80.0, sigma=0.7)).ideal_s == pytest.approx(10.0 + 0.08 * 1.2776)
    assert Case(1_000, Network(5.0), 20).ideal_s == 0.0  # one window: the machine sets the span
    assert [c.rows for c in CASES] == [30_000, 30_000, 9_000, 9_000, 20_000]
    # issue 23: 80 ms and 600 ms, each uniform +-50% and log-normal sigma 0.7
    varied = {(c.locations, c.network) for c in CASES}
    for locations, ms in ((200, 80.0), (60, 600.0)):
        assert (locations, Network(ms, spread=0.5)) in varied
        assert (locations, Network(ms, sigma=0.7)) in varied


def test_rows_right_are_those_naming_the_server_s_conversation(tmp_path: Path) -> None:
    results = tmp_path / "results.parquet"
    pl.DataFrame(
        {
            "location_id": ["L1", "L1", "L2", "L2", "L3"],
            "contact_id": ["a", "b", "a", "b", "a"],
            "status": ["created", "exists", "created", "failed", "created"],
            "conversation_id": ["c1", "c2", "wrong", None, "c5"],
        }
    ).write_parquet(results)
    held = [
        {"locationId": "L1", "contactId": "a", "id": "c1"},
        {"locationId": "L1", "contactId": "b", "id": "c2"},  # found again after a lost answer
        {"locationId": "L2", "contactId": "a", "id": "c3"},
        {"locationId": "L2", "contactId": "b", "id": "c4"},
    ]
    assert rows_right(results, held) == 2  # c5 names no conversation the server holds


def test_a_network_names_its_latency_and_the_flags_that_play_it() -> None:
    uniform, lognormal, constant = Network(80.0, spread=0.5), Network(600, sigma=0.7), Network(0)
    assert uniform.label == "80 ms latency, uniform ±50%"
    assert lognormal.label == "600 ms median latency, log-normal sigma 0.7"
    assert constant.label == "0 ms latency, constant"
    assert uniform.sandbox_flags() == ["--latency-ms", "80", "--latency-spread", "0.5"]
    assert lognormal.sandbox_flags() == ["--latency-ms", "600", "--latency-sigma", "0.7"]
    assert constant.sandbox_flags() == ["--latency-ms", "0"]
    assert (uniform.slug, lognormal.slug, constant.slug) == ("80ms-u50", "600ms-ln0.7", "0ms")
    assert (uniform.low_ms, uniform.mean_ms) == (40.0, 80.0)
    assert lognormal.low_ms == pytest.approx(600 * 0.196, rel=0.01)  # its 1st percentile
    with pytest.raises(ValueError):
        Network(80.0, spread=0.5, sigma=0.7)


def test_limit_used_is_one_for_the_ideal_schedule() -> None:
    assert limit_used([20.0, 20.0], 300, 100, 10.0) == pytest.approx(1.0)
    # a round trip of 80 ms per window turn: 300 rows in 30.16 s of a 10/s limit
    assert limit_used([20.16], 300, 100, 10.0) == pytest.approx(300 / 301.6)
    assert limit_used([20.16], 300, 100, 10.0) >= LIMIT_USED_TARGET
    assert limit_used([21.0], 300, 100, 10.0) < LIMIT_USED_TARGET  # a second late misses


def test_others_cpu_is_what_the_machine_spent_elsewhere() -> None:
    sample = Sample(
        per_s=1.0, wall_s=1.0, sandbox_cpu=0.7, client_cpu=0.9, machine_cpu=1.9, ok=True
    )
    assert sample.others_cpu == pytest.approx(0.3)
    assert Sample(1.0, 1.0, 0.7, None, 1.9, True).others_cpu is None
    assert Sample(1.0, 1.0, 0.7, 0.9, 1.5, True).others_cpu == 0.0
    assert sample.disturbed  # 30% of a core went elsewhere
    assert Sample(1.0, 1.0, 0.5, 0.5, 1.5, True).disturbed
    assert not Sample(1.0, 1.0, 0.5, 0.5, 1.2, True).disturbed


def test_hidden_programs_run_as_modules_from_the_repository(tmp_path: Path) -> None:
    """The children the harness spawns: ``python -m bench.bare`` and the launcher
    ``python -m bench.processes``, from the repository's root as the harness runs them."""
    bare = bare_argv("http://127.0.0.1:1", 10, 2, "p", 4)
    assert bare[1:3] == ["-m", "bench.bare"]
    env = child_env(None)
    helped = subprocess.run(
        [sys.executable, "-m", "bench.bare", "--help"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert helped.returncode == 0 and "--base-url" in helped.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "bench.processes", str(tmp_path / "r.json"), "true"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "usage: python -m bench.processes" in wrong.stderr
