"""What an operator of an OAuth run meets (issue 26, item 7): the sandbox's OAuth flags, the
location tokens exported for an array job, and the lines a run prints when a location has
no credential or a refresh token is spent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from pipeline.sandbox import SandboxThread
from tests.conftest import run_cli, write_csv
from tests.e2e.test_oauth import (
    CLIENT_ID,
    COMPANY,
    SECRET,
    configure,
    grants_for_locations,
    oauth_file,
    oauth_run,
)

ACME = "LocAcme0000000000001"
BETA = "LocBeta0000000000001"
GONE = "LocGone0000000000001"  # no credential, or the app is not installed there


# -- pipeline sandbox --help and its OAuth flags ---------------------------------------------


def test_the_sandbox_help_names_its_oauth_flags() -> None:
    done = run_cli("sandbox", "--help")
    assert done.code == 0
    flags = ["--oauth-client ID:SECRET", "--refresh-token", "TOKEN=Location:ID",
             "TOKEN=Company:ID", "--installed COMPANY:LOC,LOC", "--access-token-ttl-s"]  # fmt: skip
    for flag in flags:
        assert flag in done.stdout, flag


def test_a_sandbox_started_with_the_documented_flags_accepts_an_oauth_refresh() -> None:
    """The flags as README and --help give them: a refresh is answered with a new pair,
    the old refresh token is then spent, and the agency mints where the app is installed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sandbox", "--port", "0",
         "--oauth-client", f"{CLIENT_ID}:{SECRET}",
         "--refresh-token", f"rt-acme=Location:{ACME}",
         "--refresh-token", f"rt-agency=Company:{COMPANY}",
         "--installed", f"{COMPANY}:{BETA}", "--access-token-ttl-s", "600"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"sandbox listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        with httpx.Client(base_url=match.group(1)) as client:

            def refresh(token: str, user_type: str) -> httpx.Response:
                form = {"client_id": CLIENT_ID, "client_secret": SECRET, "user_type": user_type,
                        "grant_type": "refresh_token", "refresh_token": token}  # fmt: skip
                return client.post("/oauth/token", data=form)

            first = refresh("rt-acme", "Location")
            assert first.status_code == 200, first.text
            assert first.json()["refresh_token"] and first.json()["expires_in"] == 600
            assert refresh("rt-acme", "Location").status_code == 400  # spent
            agency = refresh("rt-agency", "Company").json()["access_token"]
            headers = {"Authorization": f"Bearer {agency}", "Version": "2021-07-28"}
            minted = client.post("/oauth/locationToken", headers=headers,
                                 data={"companyId": COMPANY, "locationId": BETA})  # fmt: skip
            assert minted.status_code in (200, 201) and minted.json()["access_token"]
            refused = client.post("/oauth/locationToken", headers=headers,
                                  data={"companyId": COMPANY, "locationId": GONE})  # fmt: skip
            assert refused.status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# -- what a run says: no credential, a spent refresh token -----------------------------------


def test_an_oauth_run_says_what_is_missing_and_what_a_spent_refresh_token_needs(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    grants = grants_for_locations([ACME, BETA])
    configure(sandbox, grants)
    credentials = oauth_file(tmp_path, grants)
    # BETA's refresh token in the file is not the one the sandbox knows: spent, or revoked.
    text = credentials.read_text(encoding="utf-8").replace(f"rt-{BETA}-initial-0001", "rt-spent")
    credentials.write_text(text, encoding="utf-8")
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", [ACME, BETA, GONE][i % 3]) for i in range(9)])
    out = tmp_path / "r.parquet"
    done = oauth_run(sandbox, src, out, credentials)
    assert done.code == 1, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert (
        f"refresh token refused (spent or revoked): HighLevel refused the refresh token of "
        f"--oauth-file {credentials} (the location's own credential), used for 1 location "
        f"({BETA}); 3 rows not sent. Reconnect the app in HighLevel (or install it again) and "
        "put the new refresh token in the --oauth-file, then retry."
    ) in lines
    assert (
        f"no token: 1 location ({GONE}): --oauth-file {credentials} (no credential for it, "
        "and no agency's to mint one); 3 rows not sent. Install the app on those sub-accounts "
        "and put each installation's refresh token in the --oauth-file (or the agency's, whose "
        "token mints one for every sub-account where the app is installed), then retry."
    ) in lines
    assert "tokens file" not in done.stdout and "Replace the token" not in done.stdout
    results = pl.read_parquet(out)
    messages = dict(
        results.filter(pl.col("status") == "skipped")
        .group_by("location_id")
        .agg(pl.col("error_message").first())
        .sort("location_id")
        .iter_rows()
    )
    assert messages[GONE] == (
        f"no credential for this location in --oauth-file {credentials}, and no agency's to "
        "mint one: install the app there and put its refresh token in the file"
    )
    first_beta = results.filter(pl.col("location_id") == BETA).sort("row_index")["error_message"][0]
    assert first_beta == (
        f"Location {BETA}: the refresh token was refused (HTTP 400 invalid_grant: spent or "
        "revoked); reconnect the app in HighLevel and put the new refresh token in the "
        "--oauth-file"
    )


def test_check_says_what_an_oauth_file_lacks_for_a_location(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    grants = grants_for_locations([ACME])
    configure(sandbox, grants)
    credentials = oauth_file(tmp_path, grants)
    src = write_csv(tmp_path / "in.csv", [("c1", ACME), ("c2", GONE)])
    done = run_cli(
        "check", str(src), "--oauth-file", str(credentials), "--base-url", sandbox.base_url,
        env={"GHL_CLIENT_SECRET": SECRET}, token=None,
    )  # fmt: skip
    assert done.code == 1, done.stderr[-2000:]
    assert (
        f"{GONE}: no credential for this location in --oauth-file {credentials}, and no "
        "agency's to mint one: install the app there and put its refresh token in the file"
    ) in done.stdout
    assert "tokens file" not in done.stdout


# -- pipeline oauth export-tokens --------------------------------------------------------------

OWN = "LocOwn00000000000001"  # a sub-account's own installation (a Location credential)


def export_setup(sandbox: SandboxThread, tmp_path: Path, ttl_s: float) -> tuple[Path, Path]:
    grants = {
        "rt-agency-initial-0001": {"user_type": "Company", "company_id": COMPANY},
        "rt-own-initial-0001": {"user_type": "Location", "location_id": OWN},
    }
    configure(sandbox, grants, oauth_installed={COMPANY: [ACME, BETA]}, access_token_ttl_s=ttl_s)
    credentials = oauth_file(tmp_path, grants)
    rows = [(f"c{i}", [ACME, BETA, OWN, GONE][i % 4]) for i in range(40)]
    return credentials, write_csv(tmp_path / "in.csv", rows)


def export(sandbox: SandboxThread, src: Path, credentials: Path, folder: Path, *extra: str) -> Any:
    return run_cli(
        "oauth", "export-tokens", str(src), "--oauth-file", str(credentials),
        "--base-url", sandbox.base_url, "-o", str(folder), *extra,
        env={"GHL_CLIENT_SECRET": SECRET}, token=None,
    )  # fmt: skip


def test_export_tokens_writes_private_token_files_that_a_run_uses_and_lists_the_rest(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    credentials, src = export_setup(sandbox, tmp_path, ttl_s=3600)
    folder = tmp_path / "minted"
    done = export(sandbox, src, credentials, folder, "--min-lifetime", "50m")
    assert done.code == 1, done.stderr[-2000:]  # a location left out
    lines = done.stdout.splitlines()
    assert lines[0] == f"3 location tokens -> {folder}/ (0600 each)"
    assert lines[1].startswith(f"tokens file: {folder / 'tokens.toml'} (--tokens-file); ")
    assert lines[2:] == [
        "left out: 1 location (10 rows of the input), no token:",
        f"  {GONE}  not installed: no token can be minted here: Location {GONE}: HTTP 400 "
        "The app is not installed on this location.; install the app on this sub-account, "
        "then export again",
    ]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([ACME, BETA, OWN, "tokens.toml"])
    for path in folder.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
    for location in (ACME, BETA, OWN):
        token = (folder / location).read_text(encoding="utf-8").strip()
        assert token and token not in done.stdout + done.stderr
    # The tokens file works for a real run, with no --oauth-file and no refresh.
    sendable = write_csv(
        tmp_path / "ok.csv", [(f"d{i}", [ACME, BETA, OWN][i % 3]) for i in range(30)]
    )
    out = tmp_path / "r.parquet"
    run = run_cli(
        "run", str(sendable), "-o", str(out), "--tokens-file", str(folder / "tokens.toml"),
        "--base-url", sandbox.base_url, token=None,
    )  # fmt: skip
    assert run.code == 0, run.stdout + run.stderr[-2000:]
    assert set(pl.read_parquet(out)["status"]) == {"created"}
    # Exported again, the tokens held (living long enough) are kept: nothing is minted.
    uses, held = len(sandbox.state.refresh_uses()), token_of(folder, ACME)
    again = export(sandbox, src, credentials, folder, "--min-lifetime", "30m")
    assert again.code == 1 and len(sandbox.state.refresh_uses()) == uses
    assert token_of(folder, ACME) == held
    # Asked for more than they have left, they are minted (and refreshed) again.
    longer = export(sandbox, src, credentials, folder, "--min-lifetime", "3599s")
    assert longer.code == 1 and token_of(folder, ACME) != held


def token_of(folder: Path, location: str) -> str:
    return (folder / location).read_text(encoding="utf-8").strip()


def test_export_tokens_refuses_a_min_lifetime_longer_than_a_token_lives(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    credentials, src = export_setup(sandbox, tmp_path, ttl_s=3600)
    folder = tmp_path / "minted"
    done = export(sandbox, src, credentials, folder, "--min-lifetime", "20h")
    assert done.code == 2, done.stdout + done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "pipeline: error: --min-lifetime 20h: HighLevel's tokens live 1h (a new one's "
        "expires_in), so none lives that long; ask for less, and end the job before its "
        "tokens expire"
    )
    assert not folder.exists()
    assert "Traceback" not in done.stderr
