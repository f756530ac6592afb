"""Configuration precedence and validation: command line > GHL_* environment > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.app.config import RunConfig, load_config
from pipeline.core.errors import UsageError
from tests.conftest import REPO


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        '[run]\nconcurrency = 8\nmax-attempts = 2\nrate = "50/5s"\ntimeout = 7\n', encoding="utf-8"
    )
    return path


def test_defaults() -> None:
    config = load_config({}, None)
    assert (config.concurrency, config.rate, config.max_attempts) == ("auto", None, 5)
    assert config.base_url == "https://services.leadconnectorhq.com"


def test_precedence(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_CONCURRENCY", "16")
    monkeypatch.setenv("GHL_MAX_ATTEMPTS", "3")
    config = load_config({"concurrency": "32"}, config_file)
    assert config.concurrency == 32  # command line beats environment
    assert config.max_attempts == 3  # environment beats file
    assert config.rate == "50/5s" and config.timeout == 7.0  # file beats defaults
    assert config.api_version == "2021-07-28"  # default


def test_the_token_variable_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "pit-whatever")
    assert "pit-whatever" not in str(load_config({}, None).model_dump())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        (
            "concurrency = 0\n",
            "concurrency (concurrency in ",
        ),
        ('http-stack = "curl"\n', "bad.toml): Input should be 'aiohttp'"),
        ('rate = "lots"\n', "rate (rate in "),
        ('base-url = "http://example.com"\n', "plain http would send the token unencrypted"),
        ("timeout = [1]\n", "timeout (timeout in "),
        ("concurrency = \n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_config({}, path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_environment_value_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_WORKERS", "many")
    with pytest.raises(UsageError, match=r"workers \(GHL_WORKERS in the environment\)"):
        load_config({}, None)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_config({}, tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["example.toml", "sandbox.toml"])
def test_bundled_configs_are_valid(name: str) -> None:
    assert isinstance(load_config({}, REPO / "configs" / name), RunConfig)


def test_the_command_line_s_option_table_is_the_model_s() -> None:
    """``--help`` reads cli/options.json, not pydantic: the file must say what RunConfig
    says (after a change to the model: ``python -m pipeline.cli.options``)."""
    from pipeline.cli.options import option_specs, stored_specs

    assert stored_specs() == option_specs()
    assert len(stored_specs()) == len(RunConfig.model_fields)
