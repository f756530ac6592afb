"""The README's cron recipe, run as cron runs it: its own command line, under /bin/sh.

What a cron author needs: every line of the log file is JSON (a log collector parses it),
the summary is one JSON object, a run that ends well prints nothing (cron mails whatever a
job prints), and a run that fails prints its summary, which cron mails to MAILTO.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import polars as pl

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, write_csv
from tests.e2e.test_notify import Receiver

README = REPO / "README.md"


def cron_command() -> str:
    """The command of the README's crontab line (the text after the five time fields), as
    cron hands it to the shell: ``\\%`` is a ``%``."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None, "the README has no cron block"
    lines = [line for line in block.group(1).splitlines() if re.match(r"^[0-9*]", line)]
    assert len(lines) == 1, lines
    command = lines[0].split(None, 5)[5]
    assert "%" not in command.replace("\\%", ""), "an unescaped % ends a cron command"
    return command.replace("\\%", "%")


def run_recipe(
    tmp_path: Path,
    sandbox: SandboxThread,
    rows: list[tuple[str, str]],
    notify: str = "json://127.0.0.1:9/closed",
    day: str = "2026-11-27",
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """The recipe's command with its paths moved into ``tmp_path`` and the repository, on
    the day ``day`` (``date`` answers it)."""
    data, logs, secrets = tmp_path / "data", tmp_path / "log", tmp_path / "secrets"
    bin_, metrics = tmp_path / "bin", tmp_path / "textfile"
    for folder in (data, logs, secrets, bin_):  # the README: create the log folder once
        folder.mkdir(exist_ok=True)
    (secrets / "ghl").write_text(TOKEN + "\n", encoding="utf-8")
    (secrets / "ghl_notify").write_text(notify + "\n", encoding="utf-8")
    fake_date = bin_ / "date"  # the night the test plays, whatever today is
    fake_date.write_text(f"#!/bin/sh\necho {day}\n", encoding="utf-8")
    fake_date.chmod(0o755)
    source = write_csv(data / "contacts.csv", rows)
    pl.read_csv(source, infer_schema=False).write_parquet(data / "contacts.parquet")
    command = (
        cron_command()
        .replace("/opt/pipeline", str(REPO))
        .replace("/run/secrets/", f"{secrets}/")
        .replace("/data/", f"{data}/")
        .replace("/var/log/pipeline/", f"{logs}/")
        .replace("/var/lib/prometheus/node-exporter/", f"{metrics}/")
    )
    # cron's environment: a bare PATH and the job's own line, nothing inherited.
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path), "GHL_BASE_URL": sandbox.base_url}
    done = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=120
    )
    return done, logs / "contacts.jsonl", logs / "contacts-summary.json"


def test_the_recipe_writes_json_logs_and_mails_nothing_when_all_is_done(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [(f"c{i}", f"L{i % 3}") for i in range(30)]
    done, log, summary = run_recipe(tmp_path, sandbox, rows, day="2026-11-27")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # nothing for cron to mail
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert events and all(isinstance(event, dict) and "event" in event for event in events)
    result = json.loads(summary.read_text(encoding="utf-8"))
    assert result["exit_code"] == 0 and result["by_status"] == {"created": 30}
    assert result["next"].startswith(".venv/bin/pipeline report ")

    assert (tmp_path / "data" / "results" / "contacts-2026-11-27.parquet").exists()
    prom = (tmp_path / "textfile" / "pipeline-contacts.prom").read_text(encoding="utf-8")
    assert "pipeline_rows{input=" in prom and "pipeline_last_success_timestamp_seconds" in prom

    # The next night: the export grew by 10; only they are sent (--known), the log grows.
    sent = len(sandbox.state.requests())
    grown = [*rows, *((f"n{i}", f"L{i % 3}") for i in range(10))]
    again, log, summary = run_recipe(tmp_path, sandbox, grown, day="2026-11-28")
    assert again.returncode == 0 and again.stdout == ""
    assert len(sandbox.state.requests(sent)) == 10
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) > len(events)
    assert all(isinstance(json.loads(line), dict) for line in lines)
    night = json.loads(summary.read_text(encoding="utf-8"))
    assert night["by_status"] == {"exists": 30, "created": 10}
    assert night["results"].endswith("contacts-2026-11-28.parquet")


def test_a_failed_run_prints_its_summary_for_cron_to_mail_and_notifies(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [("c1", "L1"), ("bad id", "L1"), ("c3", "L2")]
    hook = Receiver().start()
    try:
        done, log, _ = run_recipe(tmp_path, sandbox, rows, notify=hook.url)
    finally:
        hook.stop()
    assert done.returncode == 0  # `|| cat` succeeded: cron judges by the output, not the code
    mailed = json.loads(done.stdout)  # the mail's body: the summary, one JSON object
    assert mailed["exit_code"] == 1
    assert mailed["exit_reason"] == "1 rows match --fail-on invalid,failed,skipped"
    assert mailed["by_error_code"] == {"invalid_contact_id": 1}
    assert mailed["next"].startswith("1 rows need attention: .venv/bin/pipeline report ")
    assert all(isinstance(json.loads(line), dict) for line in log.read_text().splitlines())
    [message] = hook.received  # and the notification went out
    assert message.payload["type"] == "failure"
    assert "exit 1" in message.payload["title"]
