"""The CLI explains itself: grouped --help with examples, and a sandbox that says how to
point a run at it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, write_csv

COMMANDS = ["run", "retry", "check", "report", "merge", "oauth", "sandbox"]


def sections(help_text: str) -> list[str]:
    return re.findall(r"^([A-Z][A-Za-z ]+):$", help_text, re.M)


def test_the_top_help_lists_commands_in_the_order_they_are_used() -> None:
    done = run_cli("--help", token=None)
    assert done.code == 0
    listed = re.findall(r"^  (\w+)\s{2,}", done.stdout.split("Commands:")[1], re.M)
    assert listed == COMMANDS
    assert "$ pipeline sandbox &" in done.stdout  # where to start


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_in_a_named_section_and_examples_end_the_help(command: str) -> None:
    done = run_cli(command, "--help", token=None)
    assert done.code == 0, done.stderr
    titles = sections(done.stdout)
    assert "Other options" not in titles, done.stdout  # a new option must be sorted
    assert titles[-1] == "Examples"
    for example in re.findall(r"^\s+\$ (pipeline .*)$", done.stdout, re.M):
        assert len(example.split()) >= 2  # whole commands, never wrapped mid-way


def test_run_help_groups_options_as_a_person_looks_for_them() -> None:
    text = run_cli("run", "--help", token=None).stdout
    assert sections(text) == [
        "Input",
        "Output",
        "Tokens",
        "Sending",
        "Limits and retries",
        "Logging and progress",
        "Scheduled runs",
        "Array jobs",
        "Advanced",
        "Examples",
    ]
    advanced = text.split("Advanced:")[1].split("Examples:")[0]
    assert "--workers" in advanced and "--http-stack" in advanced  # advanced last
    assert "--sheet" in text.split("Input:")[1].split("Output:")[0]


def test_sandbox_help_names_the_tokens_it_accepts_and_how_to_add_more() -> None:
    text = run_cli("sandbox", "--help", token=None).stdout
    assert "sandbox-token" in text
    assert "--token TOKEN" in text and "token_scopes" in text
    assert "default: 8099" in text and "GHL_SANDBOX_PORT" in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_sandbox_prints_the_environment_a_run_needs(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sandbox"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "GHL_SANDBOX_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"sandbox listening on http://127.0.0.1:{port}\n"
        export = proc.stdout.readline().strip()
        assert export == f"export GHL_BASE_URL=http://127.0.0.1:{port} GHL_TOKEN=sandbox-token"
        pasted = dict(pair.split("=", 1) for pair in export.removeprefix("export ").split())
        src = write_csv(tmp_path / "in.csv", [("c1", "L1"), ("c2", "L2")])
        done = run_cli("run", str(src), "-o", str(tmp_path / "r.parquet"), env=pasted, token=None)
        assert done.code == 0, done.stderr

        second = run_cli("sandbox", env={"GHL_SANDBOX_PORT": str(port)}, token=None)
        assert second.code == 2
        assert second.stderr == (
            f"pipeline: error: sandbox: port {port} on 127.0.0.1 is in use (another "
            "sandbox?); pick another with --port, or --port 0 for a free one\n"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    """--help and a usage error must answer in well under a second (BENCHMARKS.md,
    "Start-up"): importing the CLI loads none of polars, aiohttp, httpx, obstore or
    pydantic; the commands import them when they need them. (A shards module importing
    polars at the top once cost every --help 130 ms; pydantic, for the options' table, about
    200 ms: the table is cli/options.json now.)"""
    heavy = ("polars", "aiohttp", "httpx", "obstore", "pydantic")
    code = (
        "import sys, pipeline.cli.commands\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"
