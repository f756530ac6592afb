"""After a run stops short, the summary says what happened and what to do, and the command
it gives works when pasted: a rejected token (named by where it came from, never by value),
a spent daily quota, an interrupted run."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, run_cli, wait_until, write_csv
from tests.test_end_to_end import fast_limits
from tests.test_resilience import journal_lines


def pasted(line: str, prefix: str) -> list[str]:
    """The arguments of the command a summary line ends with, as a shell would split it;
    the program is the console script the tests' interpreter has beside it."""
    assert prefix in line, line
    words = shlex.split(line.split(prefix, 1)[1])
    assert words[0] == ".venv/bin/pipeline", line
    return words[1:]


def summary_lines(stdout: str) -> list[str]:
    return stdout.rstrip("\n").splitlines()


def test_a_rejected_token_is_named_by_its_source_and_the_retry_works(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L1"), ("c3", "L2")])
    out = tmp_path / "r.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox), token="wrong-token")
    assert done.code == 1, done.stderr
    lines = summary_lines(done.stdout)
    assert lines[-2] == (
        "token rejected (401): the token from GHL_TOKEN in the environment, used for "
        "2 locations (L1, L2); 3 rows not sent. Replace the token, then retry."
    )
    assert "wrong-token" not in done.stdout + done.stderr
    assert lines[-1].startswith(f"next: once fixed: .venv/bin/pipeline retry {out} -o ")
    retried = run_cli(*pasted(lines[-1], "once fixed: "))  # with the right token now
    assert retried.code == 0, retried.stderr
    results = pl.read_parquet(tmp_path / "r-retry.parquet")
    assert results["status"].to_list() == ["created"] * 3


def test_a_tokens_file_names_the_variable_of_the_rejected_token(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L2")])
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[tokens]\nL1 = { env = "GHL_TOKEN_ACME" }\nL2 = { env = "GHL_TOKEN_BETA" }\n',
        encoding="utf-8",
    )
    env = {"GHL_TOKEN_ACME": TOKEN, "GHL_TOKEN_BETA": "revoked-token"}
    out = tmp_path / "r.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--tokens-file", str(tokens), *fast_limits(sandbox),
        env=env, token=None,
    )  # fmt: skip
    assert done.code == 1, done.stderr
    assert (
        "token rejected (401): the token from GHL_TOKEN_BETA in the environment, used for "
        "1 location (L2); 1 row not sent. Replace the token, then retry."
    ) in summary_lines(done.stdout)


def test_a_spent_daily_quota_says_to_resume_later_and_the_command_works(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    sandbox.update_config(daily_limit=4)
    rows = [(f"c{i}", "L1") for i in range(10)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "r.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1, done.stderr
    lines = summary_lines(done.stdout)
    assert lines[-2].startswith("daily quota spent: 1 location (L1); ")
    assert lines[-2].endswith(
        "rows not sent yet. HighLevel does not say when its day turns: run the same command "
        "with --resume later (within a day); it sends only the rows not yet sent."
    )
    assert lines[-1].startswith("next: once the quota turns: .venv/bin/pipeline run ")
    sandbox.update_config(daily_limit=1000)  # the day turned
    again = run_cli(*pasted(lines[-1], "once the quota turns: "))
    assert again.code == 0, again.stderr
    results = pl.read_parquet(out)
    assert results.height == 10 and set(results["status"]) == {"created"}


def test_ctrl_c_prints_the_command_that_continues(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", f"L{i % 2}") for i in range(400)])
    out = tmp_path / "r.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox, 20, 500)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env={"GHL_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: journal_lines(out) >= 20, timeout=30)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-2000:]
    lines = summary_lines(stdout)
    assert lines[-2] == "exit 130: interrupted"
    program = ".venv/bin/pipeline"
    assert lines[-1] == "next: continue with: " + shlex.join([program, *args, "--resume"])
    again = run_cli(*pasted(lines[-1], "continue with: "))
    assert again.code == 0, again.stderr
    assert set(pl.read_parquet(out)["status"]) == {"created"}
