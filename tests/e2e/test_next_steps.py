"""After a run, the summary says what happened and what to do, and the command it gives
works when pasted: each test runs the printed command as printed (split as a shell splits
it, the program as named, from the folder the run was started in). Every form the tool
prints: a rejected token (named by where it came from, never by value), a spent daily
quota, an interrupted run, a dry run, a finished run, problem rows, and a task of an array
job (told its part by the engine's environment, its results in object storage)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.inputs.shards import owner
from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, Completed, run_cli, wait_until, write_csv
from tests.e2e.test_array_job import keys
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_object_store import readme_env  # noqa: F401 - the fixture
from tests.e2e.test_resilience import journal_lines
from tests.e2e.test_storage import BUCKET, boto3_client, s3  # noqa: F401 - the fixture


def run_pasted(
    line: str,
    prefix: str,
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> Completed:
    """Run the command a summary line ends with exactly as printed, as a person pasting it
    into the shell the run was started from (``cwd``): the words as a shell splits them,
    the program as named (``.venv/bin/pipeline`` relative to that folder, or a path)."""
    assert prefix in line, line
    words = shlex.split(line.split(prefix, 1)[1])
    assert Path(words[0]).name == "pipeline", line
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    if token is not None:
        environ["GHL_TOKEN"] = token
    environ.update(env or {})
    proc = subprocess.run(words, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)
    return Completed(proc.returncode, proc.stdout, proc.stderr)


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
    retried = run_pasted(lines[-1], "once fixed: ")  # with the right token now
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
    again = run_pasted(lines[-1], "once the quota turns: ")
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
    again = run_pasted(lines[-1], "continue with: ")
    assert again.code == 0, again.stderr
    assert set(pl.read_parquet(out)["status"]) == {"created"}


def test_a_dry_run_names_the_command_that_sends_its_plan(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """The dry run wrote its output, so the same command without --dry-run would be
    refused (the output exists): it names --resume, which sends the planned rows into it."""
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", f"L{i % 3}") for i in range(9)])
    out = tmp_path / "plan.parquet"
    args = ["run", str(src), "-o", str(out), *fast_limits(sandbox), "--dry-run"]
    done = run_cli(*args, token=None)
    assert done.code == 0, done.stderr
    last = summary_lines(done.stdout)[-1]
    program = ".venv/bin/pipeline"
    command = shlex.join([program, *args[:-1], "--resume"])
    assert last == f"next: send the planned rows with: {command}"
    assert not sandbox.state.conversations()
    sent = run_pasted(last, "send the planned rows with: ")
    assert sent.code == 0, sent.stderr[-3000:]
    assert pl.read_parquet(out)["status"].to_list() == ["created"] * 9
    assert len(sandbox.state.conversations()) == 9


def test_a_finished_run_and_its_problem_rows_name_reports_that_work(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L1")])
    out = tmp_path / "ok.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    last = summary_lines(done.stdout)[-1]
    assert last == f"next: .venv/bin/pipeline report {out}"
    shown = run_pasted(last, "next: ", token=None)
    assert shown.code == 0 and "created" in shown.stdout, shown.stderr

    bad = write_csv(tmp_path / "bad.csv", [("c1", "L1"), ("", "L1"), ("c 3", "L2")])
    out = tmp_path / "bad.parquet"
    done = run_cli("run", str(bad), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1, done.stderr
    last = summary_lines(done.stdout)[-1]
    assert last.startswith("next: 2 rows need attention: .venv/bin/pipeline report ")
    listed = run_pasted(last, "rows need attention: ", token=None)
    assert listed.code == 0, listed.stderr
    problems = pl.read_csv(tmp_path / "bad-problems.csv")
    assert problems["row_index"].to_list() == [1, 2]


def test_a_task_of_an_array_job_is_told_to_resume_its_part_and_that_works(
    readme_env: dict[str, str],  # noqa: F811
    sandbox: SandboxThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two tasks told their index by Kubernetes' variable (``--shard-count`` in the args),
    results in S3 at an http:// endpoint. Task 1's token is rejected: ``retry`` of its part
    would read the part as a whole input and be refused, so it is told to resume its part
    by name (``--shard 1/2 --resume``), which sends its rows and merges. Task 0 has a bad
    row: its report lists it into a local file, since the results are in the bucket."""
    rows = [(f"c{i}", f"L{i % 8}") for i in range(16)] + [("", "L4")]
    assert {owner(f"L{k}", 2) for k in range(8)} == {0, 1}
    local = write_csv(tmp_path / "input.csv", rows)
    boto3_client(readme_env).upload_file(str(local), BUCKET, "next/input.csv")
    output = f"s3://{BUCKET}/next/job/results.parquet"
    args = [
        "run", f"s3://{BUCKET}/next/input.csv", "-o", output, "--shard-count", "2",
        "--resume", "--merge", *fast_limits(sandbox),
    ]  # fmt: skip
    where = {k: tmp_path / f"node-{k}" for k in (0, 1)}
    for folder in where.values():
        folder.mkdir()

    def task(k: int, token: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=where[k],
            env={
                **readme_env,
                "PATH": os.environ["PATH"],
                "GHL_TOKEN": token,
                "JOB_COMPLETION_INDEX": str(k),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr[-3000:]
        return summary_lines(proc.stdout)

    zero = task(0, TOKEN)
    one = task(1, "wrong-token")  # the last to finish: it merges the two parts
    for name, value in readme_env.items():
        monkeypatch.setenv(name, value)  # this process reads the results from S3 too
    assert set(pl.read_parquet(output)["error_code"]) >= {"unauthorized"}

    # Task 0: the problem rows, into a file in the folder the task ran in.
    assert zero[-1].startswith("next: 1 row needs attention: ")
    assert zero[-1].endswith(" -o results.part-00000-of-00002-problems.csv")
    listed = run_pasted(zero[-1], "needs attention: ", cwd=where[0], env=readme_env)
    assert listed.code == 0, listed.stderr
    assert pl.read_csv(where[0] / "results.part-00000-of-00002-problems.csv").height == 1

    # Task 1: resume the part by name, from any shell (no engine variable), once fixed.
    command = one[-1].split("once fixed: ", 1)[1]
    assert shlex.split(command)[1:] == [
        "run", f"s3://{BUCKET}/next/input.csv", "-o", output, "--merge",
        *fast_limits(sandbox), "--shard", "1/2", "--resume",
    ]  # fmt: skip
    again = run_pasted(one[-1], "once fixed: ", cwd=where[1], env=readme_env)
    assert again.code == 0, again.stderr[-3000:]
    results = pl.read_parquet(output)  # merged by the resumed task
    assert results["row_index"].to_list() == list(range(17))
    assert results["status"].to_list() == ["created"] * 16 + ["invalid"]
    assert len(sandbox.state.conversations()) == 16
    assert not [key for key in keys(readme_env, "next/") if ".checkpoint/" in key]
