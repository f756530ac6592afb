"""One token per sub-account: a tokens file maps each location to where its token lives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.auth.tokens import Tokens, load_tokens_file
from pipeline.core.errors import UsageError
from pipeline.sandbox import SandboxThread
from tests.conftest import run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits

ACME, BETA = "pit-acme-0000000000000001", "pit-beta-0000000000000002"


def test_toml_and_csv_files_resolve(tmp_path: Path) -> None:
    secret = tmp_path / "beta.token"
    secret.write_text(BETA + "\n", encoding="utf-8")
    toml = tmp_path / "tokens.toml"
    toml.write_text(
        f'[tokens]\nACME = {{ env = "T_ACME" }}\nBETA = {{ file = "{secret}" }}\n', encoding="utf-8"
    )
    tokens = load_tokens_file(toml, {"T_ACME": ACME})
    assert tokens.for_location("ACME") == ACME and tokens.for_location("BETA") == BETA
    assert tokens.for_location("OTHER") is None
    assert tokens.key("ACME") != tokens.key("BETA")
    as_csv = tmp_path / "tokens.csv"
    as_csv.write_text(
        f"location_id,token_env,token_file\nACME,T_ACME,\nBETA,,{secret}\n", encoding="utf-8"
    )
    assert load_tokens_file(as_csv, {"T_ACME": ACME}).by_location == tokens.by_location
    single = Tokens(default=ACME)
    assert single.for_location("anything") == ACME and single.all() == [ACME]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.toml", '[tokens]\nA = { env = "NOT_SET" }\n', "NOT_SET is not set"),
        ("t.toml", '[tokens]\nA = "pit-literal"\n', "expected { env"),
        ("t.toml", "[other]\n", "one [tokens] table"),
        ("t.toml", "[tokens\n", "not valid TOML"),
        ("t.csv", "location,token\nA,B\n", "location_id and token_env"),
        ("t.csv", "location_id,token_env,token_file\nA,X,Y\n", "line 2"),
        ("t.toml", '[tokens]\nA = { file = "/no/such/file" }\n', "cannot be read"),
    ],
)
def test_bad_tokens_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_tokens_file(path, {})


def test_each_location_uses_its_own_token(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(tokens=[ACME, BETA], location_tokens={"ACME": ACME, "BETA": BETA})
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[tokens]\nACME = { env = "T_ACME" }\nBETA = { env = "T_BETA" }\n', encoding="utf-8"
    )
    rows = (
        [(f"a{i}", "ACME") for i in range(5)]
        + [(f"b{i}", "BETA") for i in range(5)]
        + [("c0", "NONE")]
    )
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "o.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--tokens-file",
        str(tokens),
        *fast_limits(sandbox),
        token=None,
        env={"T_ACME": ACME, "T_BETA": BETA},
    )
    assert done.code == 1, done.stderr  # the NONE row has no token
    results = pl.read_parquet(out)
    assert results["status"].to_list() == ["created"] * 10 + ["skipped"]
    assert results["error_code"].to_list()[-1] == "no_token"
    assert len(sandbox.state.conversations()) == 10
    assert ACME not in done.stdout + done.stderr and BETA not in done.stdout + done.stderr


def test_a_rejected_token_stops_only_its_locations(sandbox: SandboxThread, tmp_path: Path) -> None:
    sandbox.update_config(tokens=[ACME])  # BETA's token is not accepted at all
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("location_id,token_env\nACME,T_ACME\nBETA,T_BETA\n", encoding="utf-8")
    rows = [(f"b{i}", "BETA") for i in range(40)] + [(f"a{i}", "ACME") for i in range(40)]
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "o.parquet"
    done = run_cli(
        "run",
        str(src),
        "-o",
        str(out),
        "--tokens-file",
        str(tokens),
        "--concurrency",
        "2",
        *fast_limits(sandbox),
        token=None,
        env={"T_ACME": ACME, "T_BETA": BETA},
    )
    assert done.code == 1
    results = pl.read_parquet(out)
    beta = results.filter(pl.col("location_id") == "BETA")
    assert set(beta["error_code"]) == {"unauthorized"}
    assert Counter(beta["status"].to_list()) == {"failed": 1, "skipped": 39}
    assert results.filter(pl.col("location_id") == "ACME")["status"].to_list() == ["created"] * 40
