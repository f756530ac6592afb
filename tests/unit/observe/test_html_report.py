"""``pipeline report --format html``: the pure parts (buckets, series, limits, escaping) as
unit tests, and the whole page end to end: a real run against the sandbox, the CLI writing
the page, and headless Chromium rendering it, with no console error and nothing fetched.

The browser is Debian's ``chromium`` (``make test`` installs it when it is missing). It is
driven over the DevTools protocol with aiohttp's websocket client, which the project
already depends on, so the test needs no browser-automation package. The screenshot is
kept in ``tests/artifacts/`` for a person (or CI's artifacts) to look at.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import polars as pl
import pytest

from pipeline.observe import htmlcharts, htmlfigures, htmlreport
from pipeline.observe.htmlfigures import (
    LimitLine,
    bucket_width_s,
    ideal_seconds,
    limit_of,
    timeline,
)
from pipeline.observe.htmlreport import render_html
from pipeline.observe.run_figures import RunInfo
from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, run_cli, write_csv
from tests.e2e.test_end_to_end import RESULT_COLUMNS, fast_limits

ARTIFACTS = REPO / "tests" / "artifacts"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def results(rows: list[dict[str, Any]], *, finished: bool = True) -> pl.DataFrame:
    """A results table as ``results.assemble`` writes it, from a few fields per row."""
    base: dict[str, Any] = {
        "contact_id": "c",
        "location_id": "L1",
        "status": "created",
        "conversation_id": None,
        "error_code": None,
        "http_status": None,
        "error_message": None,
        "attempts": 1,
        "trace_id": None,
        "finished_at": None,
    }
    frame = pl.DataFrame(
        [{"row_index": i, **base, **row} for i, row in enumerate(rows)],
        schema=RESULT_COLUMNS,
    )
    return frame if finished else frame.drop("finished_at")


def run_info(**changes: Any) -> RunInfo:
    fields: dict[str, Any] = {
        "started_at": "2026-03-01T11:59:59+00:00",
        "elapsed_s": 12.5,
        "requests": 10,
        "dry_run": False,
        "rate": "as announced",
        "workers": 1,
        "peak_in_flight": 64,
        "mean_latency_ms": 80.0,
    }
    return RunInfo(**{**fields, **changes})


# -- the pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span_s", "width_s"),
    [
        (0.0, 0.001),  # one answer: one bucket
        (2.5, 0.05),
        (20.0, 0.2),
        (3600.0, 30.0),
        (7 * 86400.0, 7200.0),
        (400 * 86400.0, 4 * 86400.0),  # past the nice widths: whole days
    ],
)
def test_bucket_width_keeps_the_chart_to_about_120_points(span_s: float, width_s: float) -> None:
    assert bucket_width_s(span_s) == width_s
    assert span_s / bucket_width_s(span_s) <= htmlfigures.TARGET_BUCKETS


def test_timeline_draws_the_busiest_apart_and_the_rest_as_their_mean() -> None:
    rows = []
    for location, count in (("big", 30), ("mid", 20), ("s1", 4), ("s2", 6)):
        rows += [
            {"location_id": location, "finished_at": T0 + timedelta(seconds=i)}
            for i in range(count)
        ]
    rows.append({"status": "invalid", "attempts": 0, "location_id": "never"})  # not answered
    line = timeline(results(rows), top=2)
    assert line is not None
    assert line.start == T0 and line.span_s == 29.0 and line.bucket_s == 0.25
    assert line.locations == 4
    assert [(s.name, s.rows, s.locations, s.others) for s in line.series] == [
        ("big", 30, 1, False),
        ("mid", 20, 1, False),
        ("all other 2 locations", 10, 2, True),
    ]
    big, mid, rest = line.series
    assert big.cumulative[-1] == 30 and mid.cumulative[-1] == 20
    assert rest.cumulative[-1] == 5  # the mean of 4 and 6: comparable with one location's limit
    assert all(a <= b for a, b in zip(big.cumulative, big.cumulative[1:], strict=False))
    assert big.cumulative[3] == 1 and big.cumulative[4] == 2  # second answer at 1 s: bucket 4
    assert (big.last_s, mid.last_s, rest.last_s) == (29.0, 19.0, 5.0)
    assert sum(line.per_bucket) == 60 and line.buckets == len(big.cumulative) == 117


def test_timeline_with_one_other_location_and_with_none() -> None:
    rows = [{"location_id": f"L{i}", "finished_at": T0} for i in range(3)]
    line = timeline(results(rows), top=2)
    assert line is not None and line.series[-1].name == "1 other location"
    line = timeline(results(rows), top=8)
    assert line is not None and not any(s.others for s in line.series) and len(line.series) == 3


def test_timeline_is_none_without_answers() -> None:
    planned = [{"status": "skipped", "error_code": "dry_run", "attempts": 0}] * 3
    assert timeline(results(planned)) is None  # a dry run
    assert timeline(results([{}], finished=False)) is None  # results from before finished_at


def test_a_million_rows_over_a_thousand_locations_stay_a_small_page() -> None:
    rows, locations = 1_000_000, 1_000
    frame = (
        pl.DataFrame({"row_index": pl.int_range(rows, eager=True)})
        .with_columns(
            contact_id=pl.format("c{}", "row_index"),
            location_id=pl.format("L{}", (pl.col("row_index") * 7919) % locations),
            status=pl.when(pl.col("row_index") % 97 == 0).then(pl.lit("failed")),
            conversation_id=pl.lit(None, pl.String),
            error_code=pl.when(pl.col("row_index") % 97 == 0).then(pl.lit("server_error")),
            http_status=pl.lit(201, pl.Int32),
            error_message=pl.lit(None, pl.String),
            attempts=pl.lit(1, pl.Int32),
            trace_id=pl.lit(None, pl.String),
            finished_at=pl.lit(T0) + pl.duration(microseconds=pl.col("row_index") * 500),
        )
        .with_columns(pl.col("status").fill_null("created"))
    )
    started = time.perf_counter()
    page = render_html(frame, run_info(elapsed_s=500.0, requests=rows), title="big.parquet")
    assert time.perf_counter() - started < 10  # about 0.2 s here: never a loop over rows
    assert len(page) < 250_000
    assert page.count("<polyline") == 10  # 8 locations, the other 992, the limit
    assert page.count("<rect") < 200  # bars per time bucket and status, not per row
    assert "all other 992 locations" in page
    assert "Showing the first 200 of 10,310 rows" in page


def test_limit_is_the_runs_rate_or_highlevels_default() -> None:
    assert limit_of(run_info(rate="50/0.5s and as announced")) == LimitLine(
        50, 0.5, "50 per 0.5 s (--rate)"
    )
    assert limit_of(run_info(rate="10/60s and as announced")).interval_s == 60.0
    assert limit_of(run_info(rate="as announced")) == LimitLine(
        100, 10.0, "100 per 10 s (HighLevel's default)"
    )
    assert limit_of(None).max_requests == 100


def test_ideal_time_is_one_window_per_burst_after_the_first() -> None:
    limit = LimitLine(100, 10.0, "")
    assert [ideal_seconds(n, limit) for n in (0, 1, 100, 101, 300)] == [0, 0, 0, 10, 20]


def test_every_string_from_the_data_is_escaped() -> None:
    rows = [
        {
            "contact_id": HOSTILE,
            "location_id": HOSTILE,
            "status": "failed",
            "error_code": "server_error",
            "error_message": HOSTILE + " & more",
            "trace_id": HOSTILE,
            "finished_at": T0,
        },
        {"location_id": HOSTILE, "finished_at": T0 + timedelta(seconds=1)},
    ]
    page = render_html(results(rows), run_info(rate=HOSTILE), title=f"out/{HOSTILE}.parquet")
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&amp; more" in page


def test_a_dry_runs_page_says_nothing_was_sent() -> None:
    planned = [{"status": "skipped", "error_code": "dry_run", "attempts": 0}] * 5
    page = render_html(results(planned), run_info(dry_run=True, requests=0), title="plan.parquet")
    assert '<span class="badge">dry run</span>' in page
    assert "a dry run sends nothing" in page
    assert "planned, not sent (dry run)" in page
    assert "No problem rows" in page  # a dry run's planned rows are not problems


def test_older_results_without_finished_at() -> None:
    page = render_html(results([{}, {}], finished=False), None, title="old.parquet")
    assert "no <code>finished_at</code> column" in page
    assert "Every row was created." in page and "No problem rows" in page


def test_the_problem_table_is_capped_and_says_how_to_get_the_rest() -> None:
    failed = {"status": "failed", "error_code": "server_error", "finished_at": T0}
    page = render_html(results([failed] * 250 + [{"finished_at": T0}]), None, title="r.parquet")
    table = page[page.index('id="rows"') :]
    assert table.count("<tr>") == 1 + htmlreport.MAX_LISTED_ROWS  # the header and 200 rows
    assert "Showing the first 200 of 250 rows" in table
    assert "pipeline report r.parquet --rows failed,invalid,skipped --format csv" in table


def test_listed_rows_replace_the_problem_rows() -> None:
    frame = results([{"finished_at": T0}, {"status": "invalid", "error_code": "x", "attempts": 0}])
    page = render_html(frame, None, title="r.parquet", listed=frame.head(1), listed_label="created")
    assert "<h2>Rows: created" in page and "Problem rows" not in page


# -- end to end: a real run, the CLI, and a real browser -----------------------------------

CHROMIUM_FLAGS = (
    # What Chromium needs on a closed network, as root, with no screen (the machine notes):
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
)


def chromium() -> str:
    """The browser, or a failure in CI (where ``make test`` installs it) and a skip on a
    developer's machine without it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH: `make test` installs Debian's chromium package"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Rendered:
    """What the browser saw: console and page errors, every URL the page asked for, facts
    read from the rendered DOM, and two screenshots (the page, and a small one to check)."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dom: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = field(default=b"", repr=False)
    thumbnail: bytes = field(default=b"", repr=False)


DOM_FACTS = """JSON.stringify({
  title: document.title,
  scripts: document.scripts.length,
  charts: [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {css: svg.getAttribute('class'), width: box.width, height: box.height};
  }),
  series: document.querySelectorAll('#timeline polyline.series').length,
  limit: document.querySelectorAll('#timeline polyline.limit').length,
  seriesLength: [...document.querySelectorAll('#timeline polyline.series')]
    .map(p => p.getTotalLength()),
  problemRows: document.querySelectorAll('#rows tbody tr').length,
  height: document.documentElement.scrollHeight,
})"""


async def _render(browser: str, page: Path, profile: Path, facts: str = DOM_FACTS) -> Rendered:
    """Open ``page`` in headless Chromium over the DevTools protocol and record what
    happened (``facts``: what to read from the rendered DOM). Only this test's own browser
    process is started and ended."""
    log = (profile.parent / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    seen = Rendered()
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=0) as ws:
                await _drive(ws, page, seen, facts)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return seen


async def _drive(
    ws: aiohttp.ClientWebSocketResponse, page: Path, seen: Rendered, expression: str
) -> None:
    ids = iter(range(1, 1_000_000))
    pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
    loaded = asyncio.Event()

    async def receive() -> None:
        async for message in ws:
            data = json.loads(message.data)
            if "id" in data:
                pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.loadEventFired":
                loaded.set()
            elif method == "Runtime.exceptionThrown":
                seen.errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                seen.errors.append(json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                seen.errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                seen.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                seen.errors.append(f"failed to load: {params.get('errorText')}")

    async def call(method: str, **params: Any) -> dict[str, Any]:
        key = next(ids)
        pending[key] = asyncio.get_running_loop().create_future()
        await ws.send_str(json.dumps({"id": key, "method": method, "params": params}))
        answer = await asyncio.wait_for(pending[key], 30)
        assert "error" not in answer, answer
        return dict(answer["result"])

    reader = asyncio.create_task(receive())
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            await call(f"{domain}.enable")
        await call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        seen.errors.clear()  # from here on, everything is the page's own doing
        seen.requests.clear()
        await call("Page.navigate", url=page.as_uri())
        await asyncio.wait_for(loaded.wait(), 30)
        facts = await call("Runtime.evaluate", expression=expression, returnByValue=True)
        seen.dom = json.loads(facts["result"]["value"])
        size = (await call("Page.getLayoutMetrics"))["cssContentSize"]
        whole = {"x": 0, "y": 0, "width": 1280, "height": size["height"]}
        shot = await call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**whole, "scale": 1},
        )
        seen.screenshot = base64.b64decode(shot["data"])
        small = await call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**whole, "scale": 0.25},
        )
        seen.thumbnail = base64.b64decode(small["data"])
        await asyncio.sleep(0.2)  # let late console messages arrive
    finally:
        reader.cancel()


def png_pixels(data: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes),
    decoded here so that the test needs no imaging package."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks))
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for row in range(height):
        kind = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        pixels += [tuple(line[i : i + 3]) for i in range(0, stride, channels)]  # type: ignore[misc]
        previous = line
    return pixels


def near(pixel: tuple[int, int, int], colour: str, tolerance: int = 12) -> bool:
    rgb = bytes.fromhex(colour.lstrip("#"))
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb, strict=True))


def test_html_report_of_a_real_run_renders_in_chromium(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    browser = chromium()
    # Eleven locations of decreasing size (the busiest eight drawn apart), one whose token
    # is refused (403), server errors that one attempt does not survive, and invalid rows,
    # one of them hostile markup.
    sandbox.update_config(
        location_tokens={"NOPE": "other"}, tokens=[TOKEN, "other"], fault_500=0.03, seed=7
    )
    rows = []
    for k in range(11):
        rows += [(f"c{k}x{i}", f"LOC{k:02d}") for i in range(240 - 20 * k)]
    rows += [("bad/id", "LOC00"), ("", "LOC01"), ("<script>alert(1)</script>", "LOC02")]
    rows += [("n1", "NOPE"), ("n2", "NOPE"), ("c0x1", "LOC00")]
    source = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "results.parquet"
    done = run_cli("run", str(source), "-o", str(out), "--max-attempts", "1", *fast_limits(sandbox))
    assert done.code == 1, done.stderr  # invalid and failed rows, on purpose

    page = tmp_path / "report.html"
    made = run_cli("report", str(out), "--format", "html", "-o", str(page))
    assert made.code == 0, made.stderr
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing external is referenced, nothing runs.
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", text)
    assert not re.search(r"url\(|@import|<script|<link|<iframe|<img", text, re.IGNORECASE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    stdout = run_cli("report", str(out), "--format", "html")
    assert stdout.code == 0 and stdout.stdout.startswith("<!DOCTYPE html>")
    listed = run_cli("report", str(out), "--format", "html", "--rows", "invalid")
    assert listed.code == 0 and "<h2>Rows: invalid" in listed.stdout
    assert run_cli("report", str(out), "--format", "html", "--rows", "nope").code == 2

    seen = asyncio.run(_render(browser, page, tmp_path / "profile"))
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "html-report.png"
    kept.write_bytes(seen.screenshot)
    print(f"screenshot: {kept}")

    assert seen.errors == [], seen.errors
    assert seen.requests and all(url.startswith("file://") for url in seen.requests), seen.requests
    dom = seen.dom
    assert dom["title"].startswith("Results report: ") and dom["scripts"] == 0
    kinds = [chart["css"] for chart in dom["charts"]]
    assert kinds == ["chart status-bar", "chart timeline", "chart throughput"], kinds
    assert all(chart["width"] > 900 and chart["height"] >= 30 for chart in dom["charts"])
    assert dom["series"] == 9 and dom["limit"] == 1  # 8 locations, the other 3, the limit
    assert all(length > 100 for length in dom["seriesLength"])  # lines, not dots
    assert dom["problemRows"] >= 5  # 3 invalid, 1 refused, 1 not sent, and any failed
    assert dom["height"] > 2000

    # The screenshot shows the page: not blank, and the charts' colours are in it.
    assert len(seen.screenshot) > 50_000
    pixels = png_pixels(seen.thumbnail)
    colours = Counter(pixels)
    background = colours.most_common(1)[0][1]
    assert background < 0.8 * len(pixels)  # much more than one colour
    assert len(colours) > 200
    created = htmlcharts.STATUS_COLOURS["created"]
    assert sum(n for pixel, n in colours.items() if near(pixel, created)) > 100  # status bar
    bars = htmlcharts.SERIES_COLOURS[0]
    assert sum(n for pixel, n in colours.items() if near(pixel, bars, 24)) > 50  # lines, bars


# -- the truth at a glance (issue 26): what the cards, the next steps and the rows say ------

PAGE_FACTS = """JSON.stringify({
  cards: Object.fromEntries([...document.querySelectorAll('.cards .card')].map(card => [
    card.querySelector('.label').textContent,
    {value: card.querySelector('.value').textContent,
     sub: card.querySelector('.sub') ? card.querySelector('.sub').textContent : '',
     tone: [...card.classList].filter(name => name !== 'card').join(' '),
     edge: getComputedStyle(card).borderTopColor}])),
  verdict: document.querySelector('header .verdict')?.innerText ?? '',
  next: document.querySelector('#next')?.innerText ?? null,
  nextTop: document.querySelector('#next')?.getBoundingClientRect().top ?? null,
  outcomesTop: document.querySelector('#outcomes').getBoundingClientRect().top,
  legend: [...document.querySelectorAll('#outcomes .legend li')].map(li => li.textContent),
  rows: [...document.querySelectorAll('#rows tbody tr')].map(tr => ({
    attention: tr.classList.contains('attention'),
    status: tr.querySelector('.pill').textContent,
    code: tr.querySelector('td.code').textContent,
    pill: getComputedStyle(tr.querySelector('.pill')).color,
    background: getComputedStyle(tr).backgroundColor,
  })),
  width: (() => {
    const panel = document.querySelector('#rows'), style = getComputedStyle(panel);
    const scroller = panel.querySelector('.scroll');
    return {
      viewport: window.innerWidth,
      document: document.documentElement.scrollWidth,
      table: panel.querySelector('table').getBoundingClientRect().width,
      room: panel.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
      scroller: [scroller.scrollWidth, scroller.clientWidth],
      overflowing: [...panel.querySelectorAll('td')]
        .filter(td => td.scrollWidth > td.clientWidth + 1)
        .map(td => td.className + ': ' + td.textContent.slice(0, 40)),
      locations: (() => {
        const box = document.querySelector('#locations .scroll');
        return box ? [box.scrollWidth, box.clientWidth] : null;
      })(),
      locationIds: [...document.querySelectorAll('#locations td')]
        .map(td => td.textContent).filter(text => text.length > 100).length,
    };
  })(),
})"""


def rgb(colour: str) -> str:
    """A colour as the browser's computed style writes it."""
    red, green, blue = bytes.fromhex(colour.lstrip("#"))
    return f"rgb({red}, {green}, {blue})"


def test_a_stopped_run_that_created_nothing_says_so_and_what_to_do_next(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    browser = chromium()
    # Four contacts, each listed three times: 8 duplicates in the file; the token is rejected,
    # so nothing is created (the page used to show "SUCCEEDED 8": the duplicates).
    rows = [(f"c{i}", "LOC1") for i in range(4)] * 3
    source = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "results.parquet"
    done = run_cli(
        "run", str(source), "-o", str(out), *fast_limits(sandbox), token="not-a-known-token"
    )
    assert done.code == 1, done.stderr
    assert "Replace the token, then retry." in done.stdout  # what the terminal says
    page = tmp_path / "report.html"
    made = run_cli("report", str(out), "--format", "html", "-o", str(page))
    assert made.code == 0, made.stderr

    seen = asyncio.run(_render(browser, page, tmp_path / "profile", PAGE_FACTS))
    assert seen.errors == [], seen.errors
    cards = seen.dom["cards"]
    assert "succeeded" not in cards, cards
    assert cards["created"] == {**cards["created"], "value": "0", "sub": "nothing was created"}
    assert cards["created"]["tone"] == ""
    assert cards["already existed"]["value"] == "0"
    assert cards["duplicates in file"]["value"] == "8"
    assert cards["duplicates in file"]["tone"] == ""
    assert (cards["failed"]["value"], cards["skipped"]["value"]) == ("1", "3")
    assert cards["skipped"]["tone"] == "bad"
    assert "4 rows need attention" in seen.dom["verdict"]
    # What to do next, as the terminal says it, above the charts.
    steps = seen.dom["next"]
    assert steps is not None and steps.startswith("What to do next")
    assert (
        "token rejected (401): the token from the run's source (GHL_TOKEN, --token-file, "
        "--tokens-file or --oauth-file: the results file does not record which)" in steps
    )
    assert "1 location (LOC1); 4 rows not sent. Replace the token, then retry." in steps
    assert seen.dom["nextTop"] < seen.dom["outcomesTop"]
    assert seen.dom["width"]["document"] <= 1280


def test_a_run_that_found_every_conversation_there_says_it_created_nothing() -> None:
    rows = [{"status": "exists", "error_code": "conversation_exists", "finished_at": T0}] * 4
    rows += [{"status": "duplicate", "error_code": "duplicate_row", "attempts": 0}] * 8
    page = render_html(results(rows), run_info(), title="r.parquet")
    assert '<div class="label">succeeded</div>' not in page
    assert (
        '<p class="verdict neutral">No row needs attention: 0 created, 4 already existed, '
        "8 duplicates in the file.</p>"
    ) in page
    assert 'id="next"' not in page  # nothing to do: no next steps


def test_ids_not_found_yet_need_attention_and_the_problem_rows_fit_1280_px(
    tmp_path: Path,
) -> None:
    browser = chromium()
    words = "the phone number of the contact is not valid for the country of the location"
    trace = "4f1c2b6e-9d3a-4e8b-a7f0-2c5d8e1b3a9f"
    rows: list[dict[str, Any]] = [{"contact_id": f"c{i}", "finished_at": T0} for i in range(5)]
    rows += [
        {
            "contact_id": f"n{i}",
            "status": "exists",
            "error_code": "id_not_found_yet",
            "http_status": 400,
            "error_message": "the contact has a conversation; the search did not show its id",
            "attempts": 4,
            "finished_at": T0,
        }
        for i in range(3)
    ]
    rows += [
        {  # a long message, in words; a trace id twice as long as HighLevel's
            "contact_id": "f1",
            "location_id": "tDtDnQdgm2LXpyiqYvZ6",
            "status": "failed",
            "error_code": "unprocessable",
            "http_status": 422,
            "error_message": f"HighLevel answered 422: {words}; " * 6,
            "trace_id": trace + trace,
            "finished_at": T0,
        },
        {  # IDs and a message with no place to break
            "contact_id": "A" * 200,
            "location_id": "B" * 200,
            "status": "invalid",
            "error_code": "invalid_contact_id",
            "error_message": "x" * 400,
            "attempts": 0,
        },
        {
            "status": "skipped",
            "error_code": "daily_quota_exhausted",
            "error_message": "the location's daily request quota is spent; rerun later",
            "attempts": 0,
        },
    ]
    text = render_html(results(rows), run_info(), title="r.parquet")
    assert "--rows failed,invalid,skipped,id_not_found_yet --format csv" not in text  # < 200
    page = tmp_path / "report.html"
    page.write_text(text, encoding="utf-8")

    seen = asyncio.run(_render(browser, page, tmp_path / "profile", PAGE_FACTS))
    assert seen.errors == [], seen.errors
    dom = seen.dom
    cards = dom["cards"]
    assert cards["id not found yet"]["value"] == "3"
    assert cards["id not found yet"]["tone"] == "attention"
    assert cards["id not found yet"]["edge"] == rgb(htmlcharts.ATTENTION_COLOUR)
    assert cards["already existed"]["value"] == "0"  # not counted as done
    assert cards["created"]["value"] == "5"
    assert (
        "6 rows need attention (failed, invalid, or skipped, or an id not found yet)"
        in (dom["verdict"])
    )
    assert "exists, id not found yet 3" in " | ".join(dom["legend"])
    waiting = [row for row in dom["rows"] if row["code"] == "id_not_found_yet"]
    assert len(waiting) == 3 and len(dom["rows"]) == 6
    assert all(row["attention"] and row["status"] == "exists" for row in waiting)
    assert {row["pill"] for row in waiting} == {rgb(htmlcharts.ATTENTION_COLOUR)}
    assert all(row["background"] != "rgba(0, 0, 0, 0)" for row in waiting)
    assert not any(row["attention"] for row in dom["rows"] if row not in waiting)

    width = dom["width"]
    assert width["viewport"] == 1280
    assert width["document"] <= 1280, width  # no sideways scrolling of the page
    assert width["table"] <= width["room"] + 0.5, width  # the table fits its panel
    assert width["scroller"][0] <= width["scroller"][1], width  # nor inside it
    assert width["overflowing"] == [], width  # long messages and IDs wrap in their cells
    assert width["locationIds"] == 1, width  # the 200-character location id is listed ...
    assert width["locations"][0] <= width["locations"][1], width  # ... and wraps there too
