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


BAD_CONFIGURATION = "pipeline: error: bad configuration (command line, GHL_* environment, {}): "


def test_a_configuration_error_shows_no_secret_of_any_option(tmp_path: Path) -> None:
    """Issue 26: a secret in every option that takes one, and a configuration error: the
    line names the option, its value and the rule, and none of the secrets."""
    secrets = {
        "cli_notify": "slack://CliTokA/CliTokB/CliTokC",
        "cli_push": "CliPushPass1",
        "env_token": "pit-env-0123-4567",
        "env_notify": "json://hooks.example.com/EnvHook89",
        "file_notify": "mailto://fileuser:FileMailPass@example.com",
        "file_push": "FilePushPass2",
        "file_token": "pit-file-8765-4321",
    }
    config = tmp_path / "run.toml"
    config.write_text(
        f'notify = "{secrets["file_notify"]}"\n'
        f'pushgateway = "https://ops:{secrets["file_push"]}@push.example.com"\n',
        encoding="utf-8",
    )
    (tmp_path / "token.txt").write_text(secrets["file_token"], encoding="utf-8")
    src = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    common = ["run", str(src), "-o", str(tmp_path / "o.parquet"), "--config", str(config)]
    env = {"GHL_NOTIFY": secrets["env_notify"], "GHL_TOKEN_FILE": str(tmp_path / "token.txt")}
    done = run_cli(
        *common,
        "--base-url",
        "http://example.com",
        "--notify",
        secrets["cli_notify"],
        "--pushgateway",
        f"https://ops:{secrets['cli_push']}@push.example.com",
        env=env,
        token=secrets["env_token"],
    )
    assert done.code == 2
    assert done.stderr.splitlines() == [
        BAD_CONFIGURATION.format(config) + "base-url (--base-url): plain http would send the "
        "token unencrypted; use https, or --allow-insecure-http if you really mean it "
        "(got 'http://example.com')"
    ]
    pasted = run_cli(*common, "--token-env", secrets["env_token"], env=env, token=None)
    assert pasted.code == 2
    assert pasted.stderr.splitlines() == [
        BAD_CONFIGURATION.format(config) + "token-env (--token-env): expected the name of an "
        "environment variable (letters, digits and _), not a token (got [REDACTED])"
    ]
    # A base URL that carries credentials is refused, and they are not shown either.
    secrets["base_pass"] = "BaseUrlPass3"
    credentialed = run_cli(
        *common, "--base-url", f"https://me:{secrets['base_pass']}@api.example.com", env=env
    )
    assert credentialed.code == 2
    assert credentialed.stderr.splitlines() == [
        BAD_CONFIGURATION.format(config) + "base-url (--base-url): a user or password in the "
        "URL cannot be sent: HighLevel takes the token alone, in the Authorization header; "
        "give the URL without them (got 'https://[REDACTED]@api.example.com')"
    ]
    for finished in (done, pasted, credentialed):
        for secret in secrets.values():
            assert secret not in finished.stdout + finished.stderr, secret
