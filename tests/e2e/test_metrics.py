"""Metrics for the monitoring people already run: ``--metrics-file`` (the node exporter's
textfile collector) and ``--pushgateway``, end to end through the CLI against the sandbox.

The Pushgateway tests run the real one (Debian's ``prometheus-pushgateway``; ``make test``
installs it); without its binary they fail in CI (``CI`` set) and skip elsewhere. What must
hold whichever receives the metrics: the figures are the run's, a failed run never erases
the last success's time, credentials reach the gateway and no output, and no failure to
publish changes the exit code.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from pipeline.observe import metrics
from pipeline.sandbox import SandboxThread
from tests.conftest import Completed, run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.summaries import summary_of

PUSHGATEWAY = shutil.which("prometheus-pushgateway")
USER, PASSWORD = "pusher", "s3cret-push-pass"
# bcrypt of PASSWORD (cost 4: the gateway checks it on every request), for its web config.
PASSWORD_HASH = "$2b$04$KupG0vB5HWF8vHWS0plwNuFXHAD3ij7Psvof/DTH6gL3cH5O7f7VG"
NAMES = {
    "pipeline_rows",
    "pipeline_rows_by_code",
    "pipeline_requests",
    "pipeline_throttled_answers",
    "pipeline_run_duration_seconds",
    "pipeline_daily_quota_remaining",
    "pipeline_exit_code",
    "pipeline_last_run_timestamp_seconds",
    "pipeline_last_success_timestamp_seconds",
}


def read_metrics(text: str, job: str) -> dict[str, dict[str, float]]:
    """``{metric: {value of its own label, or "": value}}`` of the series of one job (its
    ``input`` label), read with prometheus_client's own parser."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("pipeline_"):
                continue
            labels = dict(sample.labels)
            if labels.pop("input", None) != job:
                continue
            for added in ("job", "instance"):  # the Pushgateway adds them
                labels.pop(added, None)
            assert len(labels) <= 1, sample
            found.setdefault(sample.name, {})[",".join(labels.values())] = sample.value
    return found


def documented(text: str) -> dict[str, str]:
    """``{metric: HELP text}`` of the pipeline's metrics."""
    return {
        family.name: family.documentation
        for family in text_string_to_metric_families(text)
        if family.name.startswith("pipeline_")
    }


def warnings(stderr: str) -> list[dict[str, Any]]:
    """The warning events of a run's JSON log lines."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [event for event in events if event.get("level") == "warning"]


def counts(results: Path, column: str) -> dict[str, float]:
    frame = pl.read_parquet(results).drop_nulls(column).group_by(column).len()
    return {key: float(n) for key, n in frame.iter_rows()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    sandbox: SandboxThread, src: Path, out: Path, *extra: str
) -> tuple[Completed, dict[str, Any]]:
    """One run with its JSON summary."""
    done = run_cli(
        "run", str(src), "-o", str(out), "--overwrite", "--summary", "json",
        *fast_limits(sandbox), *extra,
    )  # fmt: skip
    assert done.code in (0, 1), done.stderr
    return done, json.loads(done.stdout)


# ---------------------------------------------------------------------------- --metrics-file


def test_the_metrics_file_holds_the_runs_figures(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(fault_429=0.3)
    rows = [(f"c{i}", f"L{i % 3}") for i in range(60)] + [("", "L1"), ("c1", "L1")]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "results.parquet"
    prom = tmp_path / "textfile" / "pipeline.prom"  # the folder does not exist yet
    before = time.time()
    done, summary = run(sandbox, src, out, "--metrics-file", str(prom))
    assert done.code == 1  # an invalid row
    assert sorted(p.name for p in prom.parent.iterdir()) == ["pipeline.prom"]  # no temp file

    text = prom.read_text(encoding="utf-8")
    found = read_metrics(text, job=str(src))
    assert set(found) == NAMES - {"pipeline_last_success_timestamp_seconds"}  # it failed
    statuses = dict.fromkeys(["exists", "failed", "skipped"], 0.0) | counts(out, "status")
    assert found["pipeline_rows"] == statuses
    assert statuses["created"] == 60 and statuses["invalid"] == statuses["duplicate"] == 1
    assert found["pipeline_rows_by_code"] == counts(out, "error_code")
    seen = sandbox.state.stats()
    assert found["pipeline_requests"] == {"": seen["requests"]} == {"": summary["run"]["requests"]}
    assert found["pipeline_throttled_answers"] == {"": seen["by_status"]["429"]}
    assert seen["by_status"]["429"] > 0
    remaining = summary["run"]["daily_remaining"]
    assert set(remaining) == {"L0", "L1", "L2"}  # the sandbox announces it on every answer
    assert found["pipeline_daily_quota_remaining"] == {k: float(v) for k, v in remaining.items()}
    assert found["pipeline_run_duration_seconds"] == {"": summary["run"]["elapsed_s"]}
    assert found["pipeline_exit_code"] == {"": 1.0}
    assert before < found["pipeline_last_run_timestamp_seconds"][""] < time.time()
    assert all(help_text for help_text in documented(text).values())


def test_a_failed_run_keeps_the_last_success_in_the_metrics_file(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """Two nights of one job: the same export path, a dated output each night."""
    prom = tmp_path / "pipeline.prom"
    src = write_csv(tmp_path / "export.csv", [("c1", "L1"), ("c2", "L2")])
    done, _ = run(sandbox, src, tmp_path / "r-night1.parquet", "--metrics-file", str(prom))
    assert done.code == 0
    first = read_metrics(prom.read_text(encoding="utf-8"), job=str(src))
    success = first["pipeline_last_success_timestamp_seconds"][""]
    assert success == first["pipeline_last_run_timestamp_seconds"][""]

    write_csv(src, [("c3", "L1"), ("", "L2")])  # the next night's export, same path
    done, _ = run(sandbox, src, tmp_path / "r-night2.parquet", "--metrics-file", str(prom))
    assert done.code == 1
    second = read_metrics(prom.read_text(encoding="utf-8"), job=str(src))
    assert second["pipeline_last_success_timestamp_seconds"] == {"": success}
    assert second["pipeline_last_run_timestamp_seconds"][""] > success
    assert second["pipeline_exit_code"] == {"": 1.0}
    assert second["pipeline_rows_by_code"] == {"missing_contact_id": 1.0}


def test_a_metrics_file_that_cannot_be_written_is_a_warning(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    out = tmp_path / "results.parquet"
    done, summary = run(sandbox, src, out, "--metrics-file", str(blocker / "pipeline.prom"))
    assert done.code == 0 and summary["exit_code"] == 0
    assert pl.read_parquet(out)["status"].to_list() == ["created"]
    [warning] = warnings(done.stderr)
    assert warning["event"] == "metrics file not written"
    assert warning["path"] == str(blocker / "pipeline.prom")


# ------------------------------------------------------------------------------ --pushgateway


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts the real Pushgateway on a free loopback port (persisting to a temp file, with
    basic auth when asked); gives its base URL. Stopped when the test ends. Without its
    binary: a failure in CI (where ``make test`` installs it), a skip elsewhere."""
    if PUSHGATEWAY is None:
        message = "prometheus-pushgateway is not installed: `make test` installs Debian's package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    binary = PUSHGATEWAY
    started: list[subprocess.Popen[bytes]] = []

    def start(*, auth: bool = False) -> str:
        port = free_port()
        args = [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
            "--log.level=warn",
        ]
        if auth:
            config = tmp_path / "web.yml"
            config.write_text(f"basic_auth_users:\n  {USER}: {PASSWORD_HASH}\n", encoding="utf-8")
            args.append(f"--web.config.file={config}")
        started.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", auth=(USER, PASSWORD)).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=20)
        assert ready(), "the Pushgateway did not start"
        return url

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def pushed(url: str, job: Path) -> dict[str, dict[str, float]]:
    """What the gateway serves for the group of the input ``job`` (job ``pipeline``)."""
    answer = httpx.get(f"{url}/metrics", auth=(USER, PASSWORD))
    answer.raise_for_status()
    return read_metrics(answer.text, job=str(job))


def test_a_failed_push_keeps_the_last_success_and_a_success_replaces_the_group(
    sandbox: SandboxThread, tmp_path: Path, pushgateway: Callable[..., str]
) -> None:
    url = pushgateway()
    src = tmp_path / "export.csv"  # one nightly job: the same export path, dated outputs
    good = [("c1", "L1"), ("c2", "L2")]
    done, _ = run(sandbox, write_csv(src, good), tmp_path / "n1.parquet", "--pushgateway", url)
    assert done.code == 0 and not warnings(done.stderr)
    first = pushed(url, src)
    assert set(first) == NAMES - {"pipeline_rows_by_code"}  # no row has a code
    success = first["pipeline_last_success_timestamp_seconds"][""]
    assert first["pipeline_rows"]["created"] == 2 and first["pipeline_exit_code"] == {"": 0}

    bad = [("c3", "L1"), ("", "L2")]
    done, _ = run(sandbox, write_csv(src, bad), tmp_path / "n2.parquet", "--pushgateway", url)
    assert done.code == 1 and not warnings(done.stderr)
    second = pushed(url, src)
    assert second["pipeline_last_success_timestamp_seconds"] == {"": success}
    assert second["pipeline_last_run_timestamp_seconds"][""] > success
    assert second["pipeline_exit_code"] == {"": 1}
    assert second["pipeline_rows"]["invalid"] == 1
    assert second["pipeline_rows_by_code"] == {"missing_contact_id": 1}

    other = write_csv(tmp_path / "other-export.csv", good)  # a second job: a group of its own
    done, _ = run(sandbox, other, tmp_path / "other.parquet", "--pushgateway", url)
    assert pushed(url, other)["pipeline_exit_code"] == {"": 0}
    assert pushed(url, src) == second

    # success: the group is replaced
    done, _ = run(sandbox, write_csv(src, good), tmp_path / "n3.parquet", "--pushgateway", url)
    third = pushed(url, src)
    assert third["pipeline_last_success_timestamp_seconds"][""] > success
    # the failure's missing_contact_id is gone; the same two rows again already exist
    assert third["pipeline_rows_by_code"] == {"conversation_exists": 2}
    assert third["pipeline_rows"]["invalid"] == 0


def test_basic_auth_reaches_the_gateway_and_no_output(
    sandbox: SandboxThread, tmp_path: Path, pushgateway: Callable[..., str]
) -> None:
    url = pushgateway(auth=True)
    host = url.removeprefix("http://")
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    out = tmp_path / "results.parquet"
    done, _ = run(sandbox, src, out, "--pushgateway", f"http://{USER}:{PASSWORD}@{host}")
    assert done.code == 0 and not warnings(done.stderr)
    assert pushed(url, src)["pipeline_rows"]["created"] == 1
    assert PASSWORD not in done.stdout + done.stderr

    wrong = "not-the-password"
    done, _ = run(sandbox, src, out, "--pushgateway", f"http://{USER}:{wrong}@{host}")
    assert done.code == 0
    [warning] = warnings(done.stderr)
    assert warning["event"] == "metrics not pushed" and warning["pushgateway"] == host
    assert warning["error"].startswith("HTTP 401")
    assert wrong not in done.stdout + done.stderr


def test_an_unreachable_gateway_is_a_warning_and_the_exit_code_stays(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    out = tmp_path / "results.parquet"
    prom = tmp_path / "pipeline.prom"
    done, summary = run(
        sandbox, src, out, "--pushgateway", f"http://{USER}:{PASSWORD}@{host}",
        "--metrics-file", str(prom),
    )  # fmt: skip
    assert done.code == 0 and summary["exit_code"] == 0
    [warning] = warnings(done.stderr)
    assert warning["event"] == "metrics not pushed" and warning["pushgateway"] == host
    assert "refused" in warning["error"].lower()
    assert PASSWORD not in done.stdout + done.stderr
    in_file = read_metrics(prom.read_text(encoding="utf-8"), job=str(src))
    assert in_file["pipeline_exit_code"] == {"": 0}  # the file does not depend on the gateway


class _Answering500(BaseHTTPRequestHandler):
    """A gateway that has broken: records each request, answers 500."""

    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        self.send_response(500)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"boom")

    do_PUT = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_gateway_answering_500_is_a_warning_and_got_the_credentials(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering500)
    _Answering500.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
        out = tmp_path / "results.parquet"
        done, _ = run(sandbox, src, out, "--pushgateway", f"http://{USER}:{PASSWORD}@{host}")
    finally:
        server.shutdown()
        server.server_close()
    assert done.code == 0
    [warning] = warnings(done.stderr)
    assert warning["error"] == "HTTP 500 Internal Server Error: boom"
    assert PASSWORD not in done.stdout + done.stderr
    [(method, path, authorization, body)] = _Answering500.seen
    group = base64.urlsafe_b64encode(str(src).encode()).decode()
    assert (method, path) == ("PUT", f"/metrics/job/pipeline/input@base64/{group}")
    assert authorization == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert b"pipeline_last_success_timestamp_seconds{" in body


@pytest.mark.timing
def test_a_gateway_that_never_answers_costs_the_timeout_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "PUSH_TIMEOUT_S", 0.5)
    summary = summary_of(results="out/r.parquet", by_status={"created": 1}, exit_code=0)
    with socket.socket() as silent:  # connections are queued by the kernel, never answered
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with capture_logs() as logs:
            metrics.publish(summary, path=None, pushgateway=url)
        assert time.monotonic() - started < 5
    [event] = logs
    assert (event["event"], event["log_level"]) == ("metrics not pushed", "warning")
    assert "timed out" in event["error"]


def test_a_gateway_url_is_split_into_where_and_who() -> None:
    gateway = metrics.parse_gateway("https://ops%40acme:p%3Ass@push.example:9091/pg")
    assert gateway == metrics.Gateway(
        "https://push.example:9091/pg", "push.example:9091", "ops@acme", "p:ss"
    )
    assert metrics.parse_gateway("push.example:9091") == metrics.Gateway(
        "http://push.example:9091", "push.example:9091"
    )
    summary = summary_of(input="s3://key:secret@bucket/in.parquet?X-Amz-Signature=abc")
    assert metrics.input_label(summary) == "s3://bucket/in.parquet"
