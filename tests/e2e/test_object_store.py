"""Object storage as users configure it (``pipeline/objects.py``): an S3-compatible store at
a plain ``http://`` endpoint, set only by the variables deploy/README.md names, works for
every command; one that is misconfigured or does not answer stops each command (run, merge,
check, report, ``--known``) with exit 2 and one line that names what to set; and a run that
stops before sending leaves no checkpoint object in the bucket.

S3 is moto on loopback (``test_storage``), which serves plain http.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.sandbox import SandboxThread
from pipeline.state import objects
from pipeline.state.checkpoints import Checkpoints
from pipeline.state.journal import JournalWriter
from pipeline.state.output_files import OutputFiles
from tests.conftest import error_lines, run_cli, write_csv
from tests.e2e.test_array_job import keys, outcome
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_storage import (  # noqa: F401 - the fixture
    BUCKET,
    S3_VARIABLES,
    boto3_client,
    free_port,
    moto_server,
    s3,
)

ROWS = [("c1", "L1"), ("c2", "L2"), ("c3", "L3"), ("c4", "L4")]


@pytest.fixture
def readme_env(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # noqa: F811
    """No AWS_* variable of the tests' own environment reaches a command: the store is
    configured by the README's variables alone (``S3_VARIABLES``)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    assert set(s3) == set(S3_VARIABLES)
    return s3


@pytest.fixture(scope="module")
def seeded(s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """An input in the bucket and a split dry run's two parts and merged results beside it,
    written through the store at its http:// endpoint; the folder's URI."""
    folder = f"s3://{BUCKET}/store/seed/"
    local = write_csv(tmp_path_factory.mktemp("seed") / "input.csv", ROWS)
    boto3_client(s3).upload_file(str(local), BUCKET, "store/input.csv")
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("AWS_")]:
            patch.delenv(name)
        for k in range(2):
            done = run_cli(
                "run", f"s3://{BUCKET}/store/input.csv", "-o", f"{folder}results.parquet",
                "--shard", f"{k}/2", "--merge", "--dry-run", env=s3,
            )  # fmt: skip
            assert done.code == 0, done.stderr
    assert "store/seed/results.parquet" in keys(s3, "store/seed/")
    return folder


def messages(stderr: str) -> list[str]:
    """What a person reads on stderr: the error line (a JSON error event under --log-format
    json, which fast_limits gives), not the other log lines."""
    return error_lines(stderr)


# Each command that reaches a URI, with what it needs from the test: the seeded folder, a
# local folder, the sandbox's URL.
COMMANDS = {
    "run": lambda seed, tmp, api: [
        "run", f"s3://{BUCKET}/store/input.csv", "-o", f"s3://{BUCKET}/store/{tmp.name}/r.parquet",
        "--shard", "1/2", "--resume", "--merge", *api,
    ],
    "merge": lambda seed, tmp, api: [
        "merge", seed, "-o", f"s3://{BUCKET}/store/{tmp.name}/merged.parquet",
    ],
    "check": lambda seed, tmp, api: ["check", f"s3://{BUCKET}/store/input.csv", *api],
    "report": lambda seed, tmp, api: ["report", f"{seed}results.parquet"],
    "known": lambda seed, tmp, api: [
        "run", str(write_csv(tmp / "in.csv", ROWS)), "-o", str(tmp / "out.parquet"), "--dry-run",
        "--known", f"s3://{BUCKET}/store/*/results.part-*.parquet",
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_works_with_an_http_endpoint_as_the_readme_sets_it(
    command: str,
    seeded: str,
    readme_env: dict[str, str],
    sandbox: SandboxThread,
    tmp_path: Path,
) -> None:
    args = COMMANDS[command](seeded, tmp_path, fast_limits(sandbox))
    done = run_cli(*args, env=readme_env)
    assert done.code == 0, done.stderr[-3000:]
    assert not [key for key in keys(readme_env, "store/") if ".checkpoint/" in key]


BAD_ENDPOINTS = {
    "nothing listening": (lambda: f"http://127.0.0.1:{free_port()}", "connection refused"),
    "malformed": (lambda: "htp:/not a url", "not the address of an object store"),
}


@pytest.mark.parametrize("endpoint", sorted(BAD_ENDPOINTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_store_that_cannot_be_reached_stops_every_command_in_one_line(
    command: str,
    endpoint: str,
    seeded: str,
    readme_env: dict[str, str],
    sandbox: SandboxThread,
    tmp_path: Path,
) -> None:
    url, says = BAD_ENDPOINTS[endpoint]
    before = keys(readme_env, "store/")
    args = COMMANDS[command](seeded, tmp_path, fast_limits(sandbox))
    done = run_cli(*args, env={**readme_env, "AWS_ENDPOINT_URL": url()})
    assert done.code == 2, (done.code, done.stderr[-3000:])
    (line,) = messages(done.stderr)  # one line: no traceback, no Rust panic's backtrace
    assert line.startswith("pipeline: error: ") and "internal error" not in line
    assert "AWS_ENDPOINT_URL" in line and says in line, line
    assert keys(readme_env, "store/") == before
    assert not sandbox.state.requests()  # stopped before anything was sent


def test_refused_credentials_name_the_variables_to_set(
    readme_env: dict[str, str], tmp_path: Path
) -> None:
    """A store that checks its keys (moto with authentication on) and refuses ours."""
    port = free_port()
    strict = moto_server(port, INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        done = run_cli(
            "report",
            f"s3://{BUCKET}/store/seed/results.parquet",
            env={**readme_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
        )
    finally:
        strict.terminate()
        strict.wait(timeout=10)
    assert done.code == 2
    (line,) = messages(done.stderr)
    assert "refused the credentials" in line
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line


def test_a_bucket_that_is_not_there_is_named(
    readme_env: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", ROWS)
    output = "s3://no-such-bucket-here/runs/r.parquet"
    done = run_cli("run", str(src), "-o", output, *fast_limits(sandbox), env=readme_env)
    assert done.code == 2
    (line,) = messages(done.stderr)
    assert "has no bucket s3://no-such-bucket-here/" in line, line


# -- a run that stops before sending leaves no checkpoint ----------------------------------


def test_a_run_that_fails_before_sending_leaves_no_checkpoint_object(
    seeded: str, readme_env: dict[str, str], sandbox: SandboxThread, tmp_path: Path
) -> None:
    """After claiming its checkpoint epoch, a run that stops on its input (missing; or the
    results of another input, as ``retry`` of a part read as a whole input) gives the claim
    back: the folder it found empty stays empty."""
    api = fast_limits(sandbox)
    before = keys(readme_env, "store/")
    missing = run_cli(
        "run", f"s3://{BUCKET}/store/no-such-input.csv", "-o", f"{seeded}results.parquet",
        "--shard", "0/2", "--resume", *api, env=readme_env,
    )  # fmt: skip
    assert missing.code == 2, missing.stderr
    part = f"{seeded}results.part-00000-of-00002.parquet"
    foreign = run_cli(
        "retry", part, "-o", f"{seeded}results.part-00000-of-00002-retry.parquet",
        "--shard", "0/2", *api, env=readme_env,
    )  # fmt: skip
    assert foreign.code == 2 and "of a different input" in foreign.stderr, foreign.stderr
    assert keys(readme_env, "store/") == before
    assert not sandbox.state.requests()


def test_a_failed_run_gives_back_only_its_own_claim(
    readme_env: dict[str, str],
    sandbox: SandboxThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier attempt's checkpoint (its claim, its segment) stays for the attempt that
    can use it; only the failed run's claim goes."""
    for name, value in readme_env.items():
        monkeypatch.setenv(name, value)
    output = f"s3://{BUCKET}/store/kept/r.parquet"
    earlier = Checkpoints(OutputFiles.of(output, tmp_path / "earlier"), interval_s=60)
    earlier.claim()
    journal = JournalWriter(earlier.files.journal, fingerprint="f" * 32)
    journal.add(outcome(0))
    journal.close()
    earlier.upload()
    folder = "store/kept/.r.parquet.checkpoint/"
    left = keys(readme_env, folder)
    src = write_csv(tmp_path / "in.csv", ROWS)  # not the input that journal belongs to
    done = run_cli(
        "run", str(src), "-o", output, "--resume", *fast_limits(sandbox),
        env={**readme_env, "GHL_STATE_DIR": str(tmp_path / "elsewhere")},
    )  # fmt: skip
    assert done.code == 2 and "belongs to a different input" in done.stderr, done.stderr
    assert keys(readme_env, folder) == left  # epoch 1 and its segment; no epoch 2


# -- the rules, one by one ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["htp:/not a url", "http://", "http://host name:9000", "minio:9000", "http://[::1", "ftp://x"],
)
def test_a_malformed_endpoint_is_refused_by_its_variable(value: str) -> None:
    with pytest.raises(UsageError, match=r"^AWS_ENDPOINT_URL='.*': not the address"):
        objects.store_of("s3://bucket/key", {"AWS_ENDPOINT_URL": value})


def test_an_http_endpoint_allows_http_and_https_does_not() -> None:
    plain = objects.store_of("s3://b/k", {"AWS_ENDPOINT_URL_S3": "http://10.0.0.5:9000"})
    assert plain.endpoint_var == "AWS_ENDPOINT_URL_S3"
    assert plain.client_options() == {"allow_http": True}
    tls = objects.store_of("s3://b/k", {"AWS_ENDPOINT": "https://minio.example.com/"})
    assert tls.client_options() == {}
    assert objects.store_of("s3://b/k", {}).endpoint is None
    with pytest.raises(UsageError, match="not an AWS region"):
        objects.store_of("s3://b/k", {"AWS_REGION": "us east 1"})


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("s3://b/in/input.csv", "in/input.csv"),
        ("s3://b/runs/r1/", "runs/r1"),
        ("s3://b/runs/*/results.part-*.parquet", "runs"),
        ("s3://b/x*.parquet", ""),
        ("s3://b/", ""),
    ],
)
def test_the_probe_asks_for_the_uris_object_or_its_folder(uri: str, key: str) -> None:
    assert objects._key(uri) == key


def test_without_keys_in_the_environment_the_probe_asks_only_whether_the_store_answers(
    readme_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys may come from where obstore does not look (a boto3 profile, which polars uses):
    an unsigned probe, refused by the store, still shows it is there; an address where
    nothing answers is still named."""
    monkeypatch.setattr(objects, "_REACHED", set())
    monkeypatch.setenv("AWS_ENDPOINT_URL", readme_env["AWS_ENDPOINT_URL"])
    objects.reach(f"s3://{BUCKET}/store/input.csv")  # moto refuses it unsigned: it answered
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match="nothing answers at the object store"):
        objects.reach(f"s3://{BUCKET}/store/input.csv")
