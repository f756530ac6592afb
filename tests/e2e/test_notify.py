"""Notifications: the CLI as a subprocess against the sandbox, sending to a real webhook on
loopback through apprise's ``json://`` (which POSTs ``{title, message, type}``).

A notification is a courtesy: a receiver that answers 500, is not there, hangs or trickles
changes neither the exit code nor the results, costs the run a few seconds at most, and is
a warning in the log that never quotes the URL (a webhook's URL is its key).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pytest

from pipeline.core import logs
from pipeline.observe.notify import build_message, notify, scheme_of
from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, Completed, run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.summaries import summary_of

SECRET = "s3cr3t-key"
# apprise imports the stdlib's imghdr, deprecated in 3.11: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
Answer = int | Literal["hang", "trickle"]


@dataclass
class Received:
    path: str
    payload: dict[str, Any]
    at: float  # time.monotonic() on arrival


@dataclass
class Receiver:
    """A webhook on a free loopback port that answers ``answer``: a status, ``hang`` (no
    answer until the test ends) or ``trickle`` (a header byte now and then, forever)."""

    answer: Answer = 200
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook/{SECRET}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received(self.path, json.loads(body), time.monotonic()))
                with contextlib.suppress(OSError):  # the sender gave up first, as it should
                    self.answer()

            def answer(self) -> None:
                if receiver.answer == "hang":
                    receiver.release.wait(60)
                elif receiver.answer == "trickle":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while not receiver.release.wait(0.3):
                        self.wfile.write(b"X")
                        self.wfile.flush()
                    return
                self.send_response(int(receiver.answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(answer: Answer = 200) -> Receiver:
        started.append(Receiver(answer).start())
        return started[-1]

    yield start
    for one in started:
        one.stop()


def closed_port_url() -> str:
    """A URL on a loopback port nobody listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/hook/{SECRET}"


def log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def warnings_about_notifications(stderr: str) -> list[dict[str, Any]]:
    return [
        event
        for event in log_events(stderr)
        if event.get("event") == "notification not delivered" and event["level"] == "warning"
    ]


def assert_secret_kept(done: Completed) -> None:
    assert SECRET not in done.stdout + done.stderr


def run(
    sandbox: SandboxThread, tmp_path: Path, rows: list[tuple[str, str]], *args: str, **kw: Any
) -> tuple[Completed, Path]:
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.parquet')))}.parquet"
    args = ("--summary", "json", *args)
    return run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox), *args, **kw), out


CLEAN = [("c1", "L1"), ("c2", "L1"), ("c3", "L2")]
FAILING = [("c1", "L1"), ("", "L1"), ("c3", "L2")]  # a row without a contact id is invalid


def test_a_failing_run_notifies_by_default(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    done, out = run(sandbox, tmp_path, FAILING, "--notify", hook.url)
    assert done.code == 1, done.stderr
    summary = json.loads(done.stdout)
    assert [r.path for r in hook.received] == [f"/hook/{SECRET}"]
    payload = hook.received[0].payload
    assert payload["type"] == "failure"
    assert payload["title"] == (f"pipeline: 3 rows -> {out}: exit 1 ({summary['exit_reason']})")
    body = payload["message"]
    assert body.splitlines()[:2] == [
        f"**exit 1**: {summary['exit_reason']}",
        "rows: 3 (created 2, invalid 1)",
    ]
    assert "errors: missing_contact_id 1" in body
    assert f"results: `{out}`" in body
    assert "requests" in body and f"next: `{summary['next']}`" in body
    assert any(e["event"] == "notification sent" for e in log_events(done.stderr))
    assert_secret_kept(done)


def test_a_clean_run_notifies_only_when_asked(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    quiet, _ = run(sandbox, tmp_path, CLEAN, "--notify", hook.url)
    assert quiet.code == 0, quiet.stderr
    assert hook.received == []
    again = [(f"new-{contact}", location) for contact, location in CLEAN]  # not yet created
    done, out = run(sandbox, tmp_path, again, "--notify", hook.url, "--notify-on", "always")
    assert done.code == 0, done.stderr
    [got] = hook.received
    assert got.payload["type"] == "success"
    assert got.payload["title"].startswith(f"pipeline: 3 rows -> {out}: exit 0")
    assert "rows: 3 (created 3)" in got.payload["message"]


def test_every_url_receives(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    first, second = receiver(), receiver()
    done, _ = run(sandbox, tmp_path, FAILING, "--notify", first.url, "--notify", second.url)
    assert done.code == 1, done.stderr
    assert len(first.received) == len(second.received) == 1
    assert first.received[0].payload == second.received[0].payload


def test_urls_from_the_environment(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    first, second = receiver(), receiver()
    env = {"GHL_NOTIFY": f"{first.url} {second.url}", "GHL_NOTIFY_ON": "always"}
    done, _ = run(sandbox, tmp_path, CLEAN, env=env)
    assert done.code == 0, done.stderr
    assert len(first.received) == len(second.received) == 1
    assert first.received[0].payload["type"] == "success"
    assert_secret_kept(done)


def test_receivers_that_fail_are_warnings_and_change_nothing(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    broken, working = receiver(500), receiver()
    urls = [broken.url, closed_port_url(), f"nosuchscheme://{SECRET}", working.url]
    done, out = run(sandbox, tmp_path, FAILING, *(a for url in urls for a in ("--notify", url)))
    assert done.code == 1, done.stderr  # what --fail-on decided, as without notifications
    assert pl.read_parquet(out)["status"].to_list() == ["created", "invalid", "created"]
    assert json.loads(done.stdout)["exit_code"] == 1
    warned = warnings_about_notifications(done.stderr)
    assert [w["scheme"] for w in warned] == ["json", "json", "nosuchscheme"]
    assert "error=500" in warned[0]["detail"]
    assert warned[1]["detail"] == (
        f"A Connection error occurred sending JSON notification to {logs.REDACTED}."
    )
    assert warned[2]["detail"] == "apprise does not understand this URL"
    assert len(broken.received) == len(working.received) == 1  # the others still receive
    assert_secret_kept(done)

    again = [(f"new-{contact}", location) for contact, location in CLEAN]  # not yet created
    clean, out = run(
        sandbox, tmp_path, again, "--notify", closed_port_url(), "--notify-on", "always"
    )
    assert clean.code == 0, clean.stderr
    assert pl.read_parquet(out)["status"].to_list() == ["created"] * 3
    assert len(warnings_about_notifications(clean.stderr)) == 1
    assert_secret_kept(clean)


def test_a_hanging_receiver_holds_the_run_seconds_only(
    sandbox: SandboxThread, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver("hang")
    done, _ = run(sandbox, tmp_path, CLEAN, "--notify", hook.url, "--notify-on", "always")
    finished = time.monotonic()
    assert done.code == 0, done.stderr
    [got] = hook.received
    assert finished - got.at < 8  # apprise's read timeout (4 s), then the run exits
    [warned] = warnings_about_notifications(done.stderr)
    assert warned["scheme"] == "json"
    assert_secret_kept(done)


@pytest.mark.timing
def test_a_trickling_receiver_is_abandoned_at_the_deadline_and_the_process_exits(
    receiver: Callable[..., Receiver],
) -> None:
    """A receiver that sends a byte now and then never trips a read timeout; the deadline
    abandons it, and the send's thread does not keep the process alive after it."""
    hook = receiver("trickle")
    # 4 s: apprise loads its plugins inside the deadline (about a second, more on a loaded
    # machine, where 1.5 s once ran out before the request was even made).
    code = (
        "import sys; from pipeline.observe.notify import notify; "
        "from tests.summaries import summary_of; "
        "notify([sys.argv[1]], summary_of(exit_code=1), when='failure', deadline_s=4)"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, hook.url],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert len(hook.received) == 1  # it was reached, and kept trickling past the deadline
    assert "no answer within 4s; abandoned" in proc.stdout  # structlog's default output
    assert took < 12  # start-up and apprise's import, then 4 s, not the trickle's end
    assert proc.stderr == ""


def test_nothing_is_sent_for_a_clean_run_by_default(receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    notify([hook.url], summary_of(exit_code=0), when="failure")
    assert hook.received == []
    notify([hook.url], summary_of(exit_code=0), when="always")
    assert [r.payload["type"] for r in hook.received] == ["success"]


def test_a_failure_inside_never_raises() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    broken = summary_of(rows=1, exit_code=1)
    object.__setattr__(broken.report, "rows", "many")  # a figure no format takes
    notify(["json://127.0.0.1:1/x"], broken, when="always")
    [event] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["event"] == "notifications not delivered"
    assert event["schemes"] == ["json"] and event["error"] == "ValueError"


def test_apprise_keeps_its_log_records_to_itself(receiver: Callable[..., Receiver]) -> None:
    """Some of apprise's records quote the URL whole ("Unparseable URL ..."), urllib3's the
    path at DEBUG: a handler on the root logger, set up by anyone, must not see them."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        urls = [f"nosuchscheme://{SECRET}", closed_port_url(), receiver(500).url, receiver().url]
        notify(urls, summary_of(), when="always")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert not [message for message in seen if SECRET in message]


SUMMARY: dict[str, Any] = {
    "results": "out/results.parquet",
    "rows": 1000,
    "by_status": {"created": 980, "invalid": 12, "failed": 3, "duplicate": 5},
    "by_error_code": {f"code_{i}": 10 - i for i in range(8)},
    "locations": 12,
    "run": {"elapsed_s": 125.4, "requests": 1234, "throttled": 7, "dry_run": False},
    "exit_code": 1,
    "exit_reason": "15 rows match --fail-on invalid,failed,skipped",
    "advice": ("API unreachable: 3 rows not sent. Check the network and --base-url, then retry.",),
    "next": "next: once fixed: pipeline retry out/results.parquet -o out/results-retry.parquet",
}


def test_the_message_is_short_and_says_what_happened() -> None:
    message = build_message(summary_of(**SUMMARY))
    assert message.failed
    assert message.title == (
        "pipeline: 1,000 rows -> out/results.parquet: exit 1 "
        "(15 rows match --fail-on invalid,failed,skipped)"
    )
    assert message.body.splitlines() == [
        "**exit 1**: 15 rows match --fail-on invalid,failed,skipped",
        "rows: 1,000 (created 980, invalid 12, failed 3, duplicate 5)",
        "errors: code_0 10, code_1 9, code_2 8, code_3 7, code_4 6, code_5 5, +2 more",
        "took 2m 05s, 1,234 requests (7 throttled), 12 locations",
        "results: `out/results.parquet`",
        "",
        "API unreachable: 3 rows not sent. Check the network and --base-url, then retry.",
        "next: `once fixed: pipeline retry out/results.parquet -o out/results-retry.parquet`",
    ]


def test_a_clean_dry_run_without_run_info() -> None:
    summary = summary_of(
        results="plan.parquet",
        rows=2,
        by_status={"skipped": 2},
        run={"elapsed_s": 0.42, "requests": 0, "dry_run": True},
        exit_code=0,
        exit_reason="0 rows match --fail-on invalid,failed",
    )
    message = build_message(summary)
    assert not message.failed
    assert message.title == (
        "pipeline: 2 rows -> plan.parquet (dry run): exit 0 (0 rows match --fail-on invalid,failed)"
    )
    assert message.body.splitlines()[1:] == [
        "rows: 2 (skipped 2)",
        "took 0.4s, 0 requests",
        "results: `plan.parquet`",
    ]
    bare = build_message(summary_of(results="r.parquet", exit_code=130))
    assert bare.title == "pipeline: 0 rows -> r.parquet: exit 130"
    one = build_message(summary_of(rows=1, locations=1, run={"requests": 1}, exit_code=0))
    assert one.title.startswith("pipeline: 1 row -> ") and "1 request, 1 location" in one.body
    assert "took" not in bare.body


def test_a_url_in_the_next_command_never_reaches_a_receiver() -> None:
    """The next command repeats the run's options; a --notify URL there would send one
    receiver's key to the others."""
    url = f"slack://T000/B000/{SECRET}-in-next"
    logs.register_secret(url)
    message = build_message(
        summary_of(**{**SUMMARY, "next": f"continue with: pipeline run --notify {url}"})
    )
    assert f"--notify {logs.REDACTED}" in message.body
    assert SECRET not in message.title + message.body


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        (f"slack://T/B/{SECRET}", "slack"),
        (f"MailTos://user:{SECRET}@example.com", "mailtos"),
        (f"hooks.slack.com/{SECRET}", "?"),
        (SECRET, "?"),
    ],
)
def test_only_the_scheme_is_named(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme
