"""Bad files are refused with one line and exit 2, before anything is sent; bad rows become
error codes. Each case drives the CLI as a subprocess, against a sandbox that must stay idle."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.sandbox import SandboxThread
from tests.conftest import REPO, TOKEN, run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

GOOD = "contactId,locationId\nc1,L1\n"


def refused(done_code: int, stderr: str, *needles: str) -> None:
    assert done_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def make(tmp_path: Path, name: str, content: bytes | None) -> Path:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("missing.csv", None, ["missing.csv", "no such file"]),
        ("empty.csv", b"", ["empty.csv", "empty"]),
        ("blank.csv", b"\n\n  \n", ["blank.csv", "no header line"]),
        ("garbage.csv", bytes(range(256)) * 40, ["garbage.csv", "binary data"]),
        ("garbage.csv.gz", b"\x1f\x8b not really gzip", ["garbage.csv.gz", "gzip"]),
        (
            "garbage.parquet",
            b"contactId,locationId\nc,l\n",
            ["garbage.parquet", "not a Parquet file"],
        ),
        ("torn.parquet", b"PAR1" + b"\x00" * 64, ["torn.parquet", "cannot be read"]),
        ("input.json", GOOD.encode(), ["input.json", "unknown file type", ".csv"]),
        (
            "cols.csv",
            b"First Name,Email,Phone\na,b,c\n",
            ["cols.csv", "no contactId column", "'First Name', 'Email', 'Phone'", "contact_id"],
        ),
        ("onlycontact.csv", b"contactId,Email\nc,e\n", ["onlycontact.csv", "no locationId column"]),
        (
            "onlylocation.csv",
            b"locationId,Email\nl,e\n",
            ["onlylocation.csv", "no contactId column"],
        ),
        (
            "twice.csv",
            b"contactId,Contact Id,locationId\na,b,c\n",
            ["twice.csv", "ambiguous", "'contactId', 'Contact Id'"],
        ),
    ],
)
def test_unusable_files_are_refused(
    sandbox: SandboxThread, tmp_path: Path, name: str, content: bytes | None, needles: list[str]
) -> None:
    src = make(tmp_path, name, content)
    done = run_cli("run", str(src), "-o", str(tmp_path / "out.parquet"), *fast_limits(sandbox))
    refused(done.code, done.stderr, *needles)
    assert sandbox.state.requests() == []
    assert not (tmp_path / "out.parquet").exists()


def test_a_directory_is_refused(sandbox: SandboxThread, tmp_path: Path) -> None:
    done = run_cli("run", str(tmp_path), "-o", str(tmp_path / "o.parquet"), *fast_limits(sandbox))
    refused(done.code, done.stderr, "directory")


def test_parquet_ids_of_other_types(sandbox: SandboxThread, tmp_path: Path) -> None:
    ints = tmp_path / "ints.parquet"
    pl.DataFrame({"contactId": [123, 45], "locationId": ["L", "L"]}).write_parquet(ints)
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(ints), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    assert pl.read_parquet(out)["contact_id"].to_list() == ["123", "45"]
    floats = tmp_path / "floats.parquet"
    pl.DataFrame({"contactId": [1.5], "locationId": ["L"]}).write_parquet(floats)
    done = run_cli("run", str(floats), "-o", str(tmp_path / "f.parquet"), *fast_limits(sandbox))
    refused(done.code, done.stderr, "floats.parquet", "'contactId'", "not text")


def test_output_cases(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    done = run_cli("run", str(src), "-o", str(src), *fast_limits(sandbox))
    refused(done.code, done.stderr, "the results file is Parquet")  # and never the input
    as_parquet = tmp_path / "in.parquet"
    pl.read_csv(src).write_parquet(as_parquet)
    done = run_cli("run", str(as_parquet), "-o", str(as_parquet), *fast_limits(sandbox))
    refused(done.code, done.stderr, "overwrite the input")
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    done = run_cli("run", str(src), "-o", str(blocker / "sub" / "o.parquet"), *fast_limits(sandbox))
    refused(done.code, done.stderr, "cannot create the output folder")
    out = tmp_path / "new" / "deeper" / "o.parquet"
    assert run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox)).code == 0  # made
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    refused(done.code, done.stderr, "the output exists", "--overwrite", "--resume")
    assert len(sandbox.state.requests()) == 1
    done = run_cli("run", str(src), "-o", str(out), "--overwrite", *fast_limits(sandbox))
    assert done.code == 0 and pl.read_parquet(out)["status"].to_list() == ["exists"]


def obeying_file_modes() -> list[str]:
    """A prefix for a command that makes it obey file modes even as root (CI runs as root):
    without the capabilities that let root read and write past them. (Not ``nobody``: the
    interpreter may live where only root can reach it, as under /root.)"""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        message = "running as root with no setpriv (util-linux) to drop root's file access"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]


def test_unwritable_output_folder(sandbox: SandboxThread, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    args = ["run", str(src), "-o", str(locked / "o.parquet"), *fast_limits(sandbox)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    done = subprocess.run(
        [*obeying_file_modes(), sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env={**environ, "GHL_TOKEN": TOKEN},
        timeout=120,
        cwd=REPO,
    )
    refused(done.returncode, done.stderr, "not writable")
    assert not any(locked.iterdir()) and not sandbox.state.requests()


def test_bad_rows_become_codes_and_the_rest_runs(sandbox: SandboxThread, tmp_path: Path) -> None:
    """BOM, CRLF, quoted commas and newlines, ragged rows, non-UTF-8 bytes, odd characters."""
    lines = [
        b"\xef\xbb\xbfcontactId,locationId,Note\r\n",
        b"ok1,L1,plain\r\n",
        b'"ok2",L1,"a, quoted\r\nnote"\r\n',
        b'"a,b",L1,x\r\n',
        b"bad\xff\xfe,L1,latin\r\n",
        b"short\r\n",
        b"ok3,L1,x,extra,fields\r\n",
        b"a/b,L1,x\r\n",
        b"a?b,L1,x\r\n",
        b"a#b,L1,x\r\n",
        b"a%20b,L1,x\r\n",
        b"a b,L1,x\r\n",
        b'"a\'b",L1,x\r\n',
        b"a\tb,L1,x\r\n",
        "caf\u00e9,L1,x\r\n".encode(),
        b"   ,L1,x\r\n",
        b"x" * 65 + b",L1,x\r\n",
        b"ok4,\r\n",
    ]
    src = make(tmp_path, "quirks.csv", b"".join(lines))
    out = tmp_path / "o.parquet"
    done = run_cli("run", str(src), "-o", str(out), *fast_limits(sandbox))
    assert done.code == 1, done.stderr
    results = pl.read_parquet(out)
    codes = results["error_code"].to_list()
    assert results.height == 17
    assert results["status"].to_list()[:2] == ["created", "created"]
    assert codes == [
        None,
        None,
        "invalid_contact_id",
        "invalid_contact_id",
        "missing_location_id",
        None,
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "invalid_contact_id",
        "missing_contact_id",
        "invalid_contact_id",
        "missing_location_id",
    ]
    assert {c for (_, c) in sandbox.state.conversations()} == {"ok1", "ok2", "ok3"}


def test_gzipped_csv_runs(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = make(tmp_path, "in.csv.gz", gzip.compress(GOOD.encode()))
    done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), *fast_limits(sandbox))
    assert done.code == 0, done.stderr


def test_token_file(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    token_file = tmp_path / "token"
    token_file.write_text("sandbox-token\n", encoding="utf-8")
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "o.parquet"),
        "--token-file",
        str(token_file),
        *fast_limits(sandbox),
        token=None,
    )
    assert done.code == 0, done.stderr
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(tmp_path / "p.parquet"),
        "--token-file",
        str(tmp_path / "nope"),
        *fast_limits(sandbox),
        token=None,
    )
    refused(done.code, done.stderr, "--token-file", "cannot be read")


def test_token_is_never_a_command_line_value(tmp_path: Path) -> None:
    """There is no --token (a command line shows in ps, shell history and cron mail): the
    line says so and names the three ways, without repeating the value."""
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    for given in (["--token", "pit-abc"], ["--token=pit-abc"]):
        done = run_cli("run", str(src), "-o", str(tmp_path / "o.parquet"), *given)
        assert (done.code, done.stderr) == (
            2,
            "pipeline: error: no --token option: a token on the command line shows in ps, "
            "shell history and logs; give it in GHL_TOKEN, a file (--token-file), or a "
            "tokens file (--tokens-file)\n",
        )
