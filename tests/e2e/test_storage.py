"""Several input files as one run, and a round trip through S3: a real S3-compatible server
(moto's server mode) on loopback, started by the tests themselves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.sandbox import SandboxThread
from pipeline.state.output_files import OutputFiles
from tests.conftest import run_cli
from tests.e2e.test_end_to_end import fast_limits

BUCKET = "ghl-migrations"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The variables a store is configured with, and nothing else: those deploy/README.md has a
# person put in the Secret ghl-s3 (and AWS_REGION, which the manifests set). moto serves
# plain http, as an S3-compatible store in a cluster often does: an http:// endpoint must
# work as given (test_the_store_is_configured_as_the_deploy_readme_says holds the two
# lists together).
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def moto_server(port: int, **environ: str) -> subprocess.Popen[bytes]:
    """moto's S3 server on loopback at ``port``, ready for requests."""
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **environ},
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on loopback, and the environment a run needs to use it."""
    port = free_port()
    proc = moto_server(port)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",  # plain http, given as it is
        "AWS_REGION": "us-east-1",
    }
    assert tuple(env) == S3_VARIABLES
    client = boto3_client(env)
    client.create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def boto3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def parts(folder: Path, sizes: list[int], fmt: str) -> list[pl.DataFrame]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    start = 0
    for k, size in enumerate(sizes):
        frame = pl.DataFrame(
            {
                "contactId": [f"c{start + i}" for i in range(size)],
                "locationId": [f"L{(start + i) % 3}" for i in range(size)],
            }
        )
        if fmt == "parquet":
            frame.write_parquet(folder / f"part-{k:03d}.parquet")
        else:
            frame.write_csv(folder / f"part-{k:03d}.csv")
        frames.append(frame)
        start += size
    return frames


@pytest.mark.parametrize("form", ["folder", "glob"])
def test_several_files_are_one_run(sandbox: SandboxThread, tmp_path: Path, form: str) -> None:
    parts(tmp_path / "in", [4, 0, 3, 5], "parquet")
    (tmp_path / "in" / "notes.txt").write_text("ignored", encoding="utf-8")
    source = str(tmp_path / "in") if form == "folder" else str(tmp_path / "in" / "part-*.parquet")
    out = tmp_path / "o.parquet"
    done = run_cli("run", source, "-o", str(out), *fast_limits(sandbox))
    assert done.code == 0, done.stderr
    results = pl.read_parquet(out)
    assert results["row_index"].to_list() == list(range(12))
    assert results["contact_id"].to_list() == [f"c{i}" for i in range(12)]
    names = [Path(p).name for p in results["source_file"].to_list()]
    assert names == ["part-000.parquet"] * 4 + ["part-002.parquet"] * 3 + ["part-003.parquet"] * 5
    assert len(sandbox.state.conversations()) == 12


def test_a_folder_of_csv_parts(tmp_path: Path) -> None:
    parts(tmp_path / "in", [2, 2], "csv")
    done = run_cli(
        "run", str(tmp_path / "in"), "-o", str(tmp_path / "o.parquet"), "--dry-run", token=None
    )
    assert done.code == 0, done.stderr
    assert pl.read_parquet(tmp_path / "o.parquet")["row_index"].to_list() == [0, 1, 2, 3]


def test_folders_and_globs_that_cannot_be_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = run_cli(
        "run", str(tmp_path / "empty"), "-o", str(tmp_path / "o.parquet"), "--dry-run", token=None
    )
    assert done.code == 2 and "no .csv, .csv.gz or .parquet files" in done.stderr
    done = run_cli(
        "run",
        str(tmp_path / "nothing-*.csv"),
        "-o",
        str(tmp_path / "o.parquet"),
        "--dry-run",
        token=None,
    )
    assert done.code == 2 and "no files match" in done.stderr
    parts(tmp_path / "mixed", [1], "csv")
    parts(tmp_path / "mixed2", [1], "parquet")
    (tmp_path / "mixed2" / "part-000.parquet").rename(tmp_path / "mixed" / "x.parquet")
    done = run_cli(
        "run", str(tmp_path / "mixed"), "-o", str(tmp_path / "o.parquet"), "--dry-run", token=None
    )
    assert done.code == 2 and "mixes CSV and Parquet" in done.stderr


def test_round_trip_through_s3(sandbox: SandboxThread, tmp_path: Path, s3: dict[str, str]) -> None:
    client = boto3_client(s3)
    local = parts(tmp_path / "in", [5, 4], "parquet")
    for k in range(2):
        client.upload_file(
            str(tmp_path / "in" / f"part-{k:03d}.parquet"), BUCKET, f"contacts/part-{k:03d}.parquet"
        )
    source = f"s3://{BUCKET}/contacts/*.parquet"
    target = f"s3://{BUCKET}/results/run-1.parquet"
    state = tmp_path / "state"
    args = ["run", source, "-o", target, "--state-dir", str(state), *fast_limits(sandbox)]
    done = run_cli(*args, env=s3)
    assert done.code == 0, done.stderr
    assert f"-> {target}" in done.stdout
    fetched = tmp_path / "fetched.parquet"
    client.download_file(BUCKET, "results/run-1.parquet", str(fetched))
    results = pl.read_parquet(fetched)
    assert results["contact_id"].to_list() == pl.concat(local)["contactId"].to_list()
    assert results["source_file"].to_list()[0] == f"s3://{BUCKET}/contacts/part-000.parquet"
    created = sandbox.state.conversations()
    assert results["conversation_id"].to_list() == [
        created[(r["location_id"], r["contact_id"])] for r in results.iter_rows(named=True)
    ]
    files = OutputFiles.of(target, state)
    assert files.folder == state
    assert not files.existing_journals()  # the local state of the remote output is cleaned up

    again = run_cli(*args, env=s3)  # the remote output exists now
    assert again.code == 2 and "the output exists" in again.stderr
    report = run_cli("report", target, "--format", "json", env=s3)
    assert report.code == 0 and '"created": 9' in report.stdout
    secret = s3["AWS_SECRET_ACCESS_KEY"]
    assert secret not in done.stdout + done.stderr + report.stdout


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("nothing listening", "connection refused"),
        ("refusing our keys", "refused the credentials"),
        ("empty prefix", "no-such-prefix/*.parquet"),  # names the glob
    ],
)
def test_an_input_glob_in_a_store_that_cannot_be_read_is_one_line(
    tmp_path: Path, s3: dict[str, str], store: str, says: str
) -> None:
    """An input glob (its listing is the first thing read) where nothing listens, where the
    store refuses our keys (moto with authentication on), or that matches nothing: exit 2,
    one line that says which, nothing written. (test_object_store covers the other commands
    and a single object.)"""
    env = dict(s3)
    strict = None
    if store == "nothing listening":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    elif store == "refusing our keys":
        port = free_port()
        strict = moto_server(port, INITIAL_NO_AUTH_ACTION_COUNT="0")
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    prefix = "no-such-prefix" if store == "empty prefix" else "store"
    try:
        done = run_cli(
            "run",
            f"s3://{BUCKET}/{prefix}/*.parquet",
            "-o",
            str(tmp_path / "o.parquet"),
            "--dry-run",
            env=env,
            token=None,
        )
    finally:
        if strict is not None:
            strict.terminate()
            strict.wait(timeout=10)
    assert done.code == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()  # one line: no traceback, no Rust backtrace
    assert line.startswith("pipeline: error: ") and "internal error" not in line, line
    assert says in line, line
    if store != "empty prefix":
        assert "AWS_" in line, line  # names what to set
    assert not (tmp_path / "o.parquet").exists()
