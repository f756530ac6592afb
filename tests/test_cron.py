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

README = REPO / "README.md"


def cron_command() -> str:
    """The command of the README's crontab line (the text after the five time fields)."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None, "the README has no cron block"
    lines = [line for line in block.group(1).splitlines() if re.match(r"^[0-9*]", line)]
    assert len(lines) == 1, lines
    return lines[0].split(None, 5)[5]


def run_recipe(
    tmp_path: Path, sandbox: SandboxThread, rows: list[tuple[str, str]]
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """The recipe's command with its paths moved into ``tmp_path`` and the repository."""
    data, logs, secrets = tmp_path / "data", tmp_path / "log", tmp_path / "secrets"
    for folder in (data, logs, secrets):  # the README: create the log folder once
        folder.mkdir(exist_ok=True)
    (secrets / "ghl").write_text(TOKEN + "\n", encoding="utf-8")
    source = write_csv(data / "contacts.csv", rows)
    pl.read_csv(source, infer_schema=False).write_parquet(data / "contacts.parquet")
    command = (
        cron_command()
        .replace("/opt/pipeline", str(REPO))
        .replace("/run/secrets/", f"{secrets}/")
        .replace("/data/", f"{data}/")
        .replace("/var/log/pipeline/", f"{logs}/")
    )
    # cron's environment: a bare PATH and the job's own line, nothing inherited.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GHL_BASE_URL": sandbox.base_url}
    done = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=120
    )
    return done, logs / "contacts.jsonl", logs / "contacts-summary.json"


def test_the_recipe_writes_json_logs_and_mails_nothing_when_all_is_done(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [(f"c{i}", f"L{i % 3}") for i in range(30)]
    done, log, summary = run_recipe(tmp_path, sandbox, rows)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # nothing for cron to mail
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert events and all(isinstance(event, dict) and "event" in event for event in events)
    result = json.loads(summary.read_text(encoding="utf-8"))
    assert result["exit_code"] == 0 and result["by_status"] == {"created": 30}
    assert result["next"].startswith(".venv/bin/pipeline report ")

    # The next night: the same line again appends to the log, still JSON, still silent.
    again, log, summary = run_recipe(tmp_path, sandbox, rows)
    assert again.returncode == 0 and again.stdout == ""
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) > len(events)
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert json.loads(summary.read_text(encoding="utf-8"))["by_status"] == {"created": 30}


def test_a_failed_run_prints_its_summary_for_cron_to_mail(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    rows = [("c1", "L1"), ("bad id", "L1"), ("c3", "L2")]
    done, log, _ = run_recipe(tmp_path, sandbox, rows)
    assert done.returncode == 0  # `|| cat` succeeded: cron judges by the output, not the code
    mailed = json.loads(done.stdout)  # the mail's body: the summary, one JSON object
    assert mailed["exit_code"] == 1
    assert mailed["exit_reason"] == "1 rows match --fail-on invalid,failed,skipped"
    assert mailed["by_error_code"] == {"invalid_contact_id": 1}
    assert mailed["next"].startswith("1 rows need attention: .venv/bin/pipeline report ")
    assert all(isinstance(json.loads(line), dict) for line in log.read_text().splitlines())
