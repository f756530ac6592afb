"""The README's cron recipe, run as cron runs it: its own command lines, under /bin/sh.

What a cron author needs: cron mails whatever a job prints (stdout and stderr), so a night
that ends well prints nothing, a night that fails prints the summary a person reads (the
table, not a line of JSON), and a night that finds the previous one still running (exit 75)
prints nothing and leaves that night's summary alone; every line of the log file is JSON (a
log collector parses it); rows known to be invalid do not fail every night, and the weekly
line lists them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import polars as pl

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, wait_until, write_csv
from tests.e2e.test_notify import Receiver

README = REPO / "README.md"
DAY = "2026-11-27"


def cron_commands() -> list[str]:
    """The commands of the README's crontab lines (the text after the five time fields), as
    cron hands them to the shell: ``\\%`` is a ``%``."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None, "the README has no cron block"
    lines = [line for line in block.group(1).splitlines() if re.match(r"^[0-9*]", line)]
    commands = [line.split(None, 5)[5] for line in lines]
    for command in commands:
        assert "%" not in command.replace("\\%", ""), "an unescaped % ends a cron command"
    return [command.replace("\\%", "%") for command in commands]


def nightly_and_weekly() -> tuple[str, str]:
    nightly, weekly = cron_commands()
    assert " run " in nightly and " report " in weekly, (nightly, weekly)
    return nightly, weekly


class Crontab:
    """The recipe's commands with their paths moved into ``tmp_path`` and the repository,
    on the day ``day`` (``date`` answers it), in cron's environment: a bare PATH and the
    job's own line, nothing inherited."""

    def __init__(
        self,
        tmp_path: Path,
        sandbox: SandboxThread,
        notify: str = "json://127.0.0.1:9/closed",
        day: str = DAY,
    ) -> None:
        self.data, self.logs = tmp_path / "data", tmp_path / "log"
        secrets, bin_ = tmp_path / "secrets", tmp_path / "bin"
        self.metrics, self.tmp = tmp_path / "textfile", tmp_path / "tmp"
        for folder in (self.data, self.logs, secrets, bin_, self.tmp):  # the log folder: once
            folder.mkdir(exist_ok=True)
        (secrets / "ghl").write_text(TOKEN + "\n", encoding="utf-8")
        (secrets / "ghl_notify").write_text(notify + "\n", encoding="utf-8")
        fake_date = bin_ / "date"  # the night the test plays, whatever today is
        fake_date.write_text(f"#!/bin/sh\necho {day}\n", encoding="utf-8")
        fake_date.chmod(0o755)
        self.day = day

        def moved(command: str) -> str:
            return (
                command.replace("/opt/pipeline", str(REPO))
                .replace("/run/secrets/", f"{secrets}/")
                .replace("/data/", f"{self.data}/")
                .replace("/var/log/pipeline/", f"{self.logs}/")
                .replace("/var/lib/prometheus/node-exporter/", f"{self.metrics}/")
            )

        nightly, weekly = nightly_and_weekly()
        self.nightly, self.weekly = moved(nightly), moved(weekly)
        # TMPDIR: where mktemp writes, to see that every run cleans up after itself.
        self.env = {
            "PATH": f"{bin_}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TMPDIR": str(self.tmp),
            "GHL_BASE_URL": sandbox.base_url,
        }

    def export(self, rows: list[tuple[str, str]]) -> None:
        source = write_csv(self.data / "contacts.csv", rows)
        pl.read_csv(source, infer_schema=False).write_parquet(self.data / "contacts.parquet")

    def start(self, command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command], capture_output=True, text=True, env=self.env, timeout=120
        )

    def leftovers(self) -> list[Path]:
        """The summary files of runs (``mktemp``'s) still in TMPDIR: none once they end."""
        return list(self.tmp.glob("tmp.*"))

    @property
    def log(self) -> Path:
        return self.logs / "contacts.jsonl"

    @property
    def results(self) -> Path:
        return self.data / "results" / f"contacts-{self.day}.parquet"


def mail(done: subprocess.CompletedProcess[str]) -> str:
    """What cron mails: everything the job printed, on stdout and on stderr."""
    return done.stdout + done.stderr


def events(log: Path) -> list[dict[str, object]]:
    """Every line of the log file, each one JSON object (a log collector parses them)."""
    parsed = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert parsed and all(isinstance(event, dict) and "event" in event for event in parsed)
    return parsed


def assert_readable(text: str) -> None:
    """The summary a person reads: lines of text, not one line of JSON, numbers rounded."""
    assert not text.lstrip().startswith("{"), text
    assert len(text.splitlines()) >= 5, text
    assert not re.search(r"\d\.\d{6,}", text), text  # 10.299999999999999 and the like


def test_the_recipe_writes_json_logs_and_mails_nothing_when_all_is_done(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    cron = Crontab(tmp_path, sandbox)
    rows = [(f"c{i}", f"L{i % 3}") for i in range(30)]
    cron.export(rows)
    done = cron.run(cron.nightly)
    assert done.returncode == 0, done.stderr
    assert mail(done) == ""  # nothing for cron to mail
    first = events(cron.log)
    [finished] = [event for event in first if event["event"] == "finished"]
    assert finished["by_status"] == {"created": 30}

    assert cron.results.exists()
    prom = (cron.metrics / "pipeline-contacts.prom").read_text(encoding="utf-8")
    assert "pipeline_rows{input=" in prom and "pipeline_last_success_timestamp_seconds" in prom
    assert cron.leftovers() == []  # the run's summary file is gone

    # The next night: the export grew by 10; only they are sent (--known), the log grows.
    night = Crontab(tmp_path, sandbox, day="2026-11-28")
    sent = len(sandbox.state.requests())
    night.export([*rows, *((f"n{i}", f"L{i % 3}") for i in range(10))])
    again = night.run(night.nightly)
    assert again.returncode == 0 and mail(again) == ""
    assert len(sandbox.state.requests(sent)) == 10
    both = events(night.log)
    assert len(both) > len(first)
    finished = [event for event in both if event["event"] == "finished"][-1]
    assert finished["by_status"] == {"exists": 30, "created": 10}
    assert night.results.exists() and night.leftovers() == []


def test_a_failed_night_mails_its_summary_table_and_notifies(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    # A location the token may not use (403): its rows fail and are skipped.
    sandbox.update_config(location_tokens={"NOPE": "other"}, tokens=[TOKEN, "other"])
    hook = Receiver().start()
    try:
        cron = Crontab(tmp_path, sandbox, notify=hook.url)
        cron.export([("c1", "L1"), ("bad id", "L1"), ("n1", "NOPE"), ("n2", "NOPE")])
        done = cron.run(cron.nightly)
    finally:
        hook.stop()
    assert done.returncode == 0  # the recipe's shell: cron judges by the output, not the code
    body = mail(done)
    assert_readable(body)
    assert "exit 1: 2 rows match --fail-on failed,skipped" in body  # the invalid row: not
    assert re.search(r"^\s+forbidden\s+2$", body, re.M), body
    assert re.search(r"^\s+invalid_contact_id\s+1$", body, re.M), body
    assert "refused (403): 1 location (NOPE)" in body  # what to do next
    assert re.search(r"^next: .*pipeline retry ", body, re.M), body
    assert all(event["event"] for event in events(cron.log))  # the log stays JSON
    [message] = hook.received  # and the notification went out
    assert message.payload["type"] == "failure"
    assert "exit 1" in message.payload["title"]
    assert cron.leftovers() == []


def test_invalid_rows_fail_no_night_and_the_weekly_line_lists_them(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    cron = Crontab(tmp_path, sandbox)
    cron.export([("c1", "L1"), ("bad id", "L1"), ("c3", "L2")])
    for _ in range(2):  # night after night (the same day here: --resume finds it done)
        done = cron.run(cron.nightly)
        assert done.returncode == 0 and mail(done) == "", mail(done)
    weekly = cron.run(cron.weekly)
    assert weekly.returncode == 0, weekly.stderr
    listed = mail(weekly)
    assert re.search(r"^1\s+bad id\s+L1\s+invalid\s+invalid_contact_id\b", listed, re.M), listed
    assert "c1" not in listed and "c3" not in listed


def test_a_night_that_finds_the_previous_one_running_mails_nothing_and_spares_its_summary(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    # The first night is slow (every answer takes 1.5 s) and fails (a refused location).
    sandbox.update_config(
        location_tokens={"NOPE": "other"}, tokens=[TOKEN, "other"], latency_ms=1500
    )
    cron = Crontab(tmp_path, sandbox)
    cron.export([("c1", "L1"), ("c2", "L1"), ("n1", "NOPE"), ("n2", "NOPE")])
    told = "; exit $code"  # the test's own addition: the shell says how pipeline ended
    first = cron.start(cron.nightly + told)
    lock = cron.results.with_name(f".{cron.results.name}.lock")
    try:
        wait_until(lambda: lock.exists() and lock.read_text().strip() != "")
        assert lock.exists(), "the first night never took the lock"
        started = time.monotonic()
        second = cron.run(cron.nightly + told)
        assert first.poll() is None, "the first night ended before the second one started"
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 75, mail(second)  # the lock was held
    assert mail(second) == ""  # and cron mails nothing
    assert time.monotonic() - started < 60
    assert first.returncode == 1, err
    body = out + err  # the first night's mail: its whole summary, not the lock's line
    assert_readable(body)
    assert "exit 1: 2 rows match --fail-on failed,skipped" in body
    assert "another run" not in body and "pid" not in body
    assert cron.leftovers() == []
