"""The token never reaches a log line, a results file, a journal, an error message or the
terminal, whichever way a run goes wrong."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.sandbox import SandboxThread
from tests.conftest import run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

SECRET = "pit-9f8e7d6c-5b4a-4321-8765-0123456789ab"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "scenario",
    [
        "rejected",
        "server_errors",
        "timeouts",
        "dropped",
        "refused",
        "bad_file",
        "debug_bad_file",
        "interrupted_429",
    ],
)
def test_no_error_path_leaks_the_token(
    sandbox: SandboxThread, tmp_path: Path, scenario: str
) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", "L1") for i in range(12)])
    out = tmp_path / "out" / "results.parquet"
    args = [
        "run",
        str(src),
        "-o",
        str(out),
        "--max-attempts",
        "2",
        "--debug",
        *fast_limits(sandbox),
    ]
    if scenario == "rejected":
        sandbox.update_config(tokens=["only-this-one"])
    elif scenario == "server_errors":
        sandbox.update_config(fault_500=1.0)
    elif scenario == "timeouts":
        sandbox.update_config(fault_hang=1.0, hang_s=2.0)
        args += ["--timeout", "0.2"]
    elif scenario == "dropped":
        sandbox.update_config(fault_drop=1.0)
    elif scenario == "refused":
        args += ["--base-url", f"http://127.0.0.1:{closed_port()}"]
    elif scenario in ("bad_file", "debug_bad_file"):
        src.write_bytes(b"nothing,useful\n1,2\n")
        if scenario == "bad_file":
            args.remove("--debug")
    elif scenario == "interrupted_429":
        sandbox.update_config(fault_429=1.0)
    token_file = tmp_path / "token.txt"
    token_file.write_text(SECRET + "\n", encoding="utf-8")
    for how in ("env", "file"):
        if how == "env":
            done = run_cli(*args, "--overwrite", token=SECRET)
        else:
            done = run_cli(*args, "--overwrite", "--token-file", str(token_file), token=None)
        assert done.code in (1, 2), done.stderr[-1000:]
        assert SECRET not in done.stdout and SECRET not in done.stderr, scenario
        written = everything_written(tmp_path / "out") if (tmp_path / "out").exists() else b""
        assert SECRET.encode() not in written
        assert done.stderr  # the path did log something
