"""The job as a Python call: a DataFrame in, the results DataFrame out, sync and async; an
option it does not carry out refused by name, and its errors worded for Python."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import polars as pl
import pytest

import pipeline
from pipeline.app.library import NOT_YET, accepted, as_keywords
from pipeline.core.errors import OptionNotTaken
from pipeline.sandbox import SandboxThread
from tests.conftest import TOKEN, run_cli, write_csv
from tests.test_end_to_end import fast_limits


def frame(locations: int, per_location: int) -> pl.DataFrame:
    rows = [(f"c{i}x{j}", f"L{j}") for i in range(per_location) for j in range(locations)]
    return pl.DataFrame(rows, schema=["contactId", "locationId"], orient="row")


def options(sandbox: SandboxThread) -> dict[str, str]:
    fast_limits(sandbox)  # shrink the sandbox's window; the run follows what it announces
    return {"base_url": sandbox.base_url, "log_format": "json"}


def test_a_frame_in_results_out(sandbox: SandboxThread) -> None:
    rows = frame(3, 20)
    before = signal.getsignal(signal.SIGINT)
    results = pipeline.create_conversations(rows, token=TOKEN, **options(sandbox))
    assert signal.getsignal(signal.SIGINT) is before  # no handler installed, none left behind
    assert results["status"].to_list() == ["created"] * 60
    assert results["contact_id"].to_list() == rows["contactId"].to_list()
    held = sandbox.state.conversations()
    assert all(
        held[(r["location_id"], r["contact_id"])] == r["conversation_id"]
        for r in results.iter_rows(named=True)
    )


def test_an_output_is_written_and_resumable(sandbox: SandboxThread, tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    first = pipeline.create_conversations(frame(2, 5), token=TOKEN, output=out, **options(sandbox))
    assert pl.read_parquet(out).equals(first)
    with pytest.raises(pipeline.UsageError, match="the output exists"):
        pipeline.create_conversations(frame(2, 5), token=TOKEN, output=out, **options(sandbox))
    again = pipeline.create_conversations(
        frame(2, 5), token=TOKEN, output=out, resume=True, **options(sandbox)
    )
    assert again["conversation_id"].to_list() == first["conversation_id"].to_list()


async def test_the_async_form_leaves_the_callers_loop_free(sandbox: SandboxThread) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    results = await pipeline.create_conversations_async(
        frame(2, 60), token=TOKEN, **options(sandbox)
    )
    ticker.cancel()
    assert results["status"].to_list() == ["created"] * 120
    assert ticks > 20  # the loop kept serving while the job ran (two windows of 0.5 s)


def test_bad_options_and_rows_are_usage_errors(sandbox: SandboxThread) -> None:
    with pytest.raises(pipeline.UsageError, match="unknown option"):
        pipeline.create_conversations(frame(1, 1), token=TOKEN, colour="red")
    with pytest.raises(pipeline.UsageError, match="rate"):
        pipeline.create_conversations(frame(1, 1), token=TOKEN, rate="lots")
    with pytest.raises(pipeline.UsageError, match="no contactId column"):
        pipeline.create_conversations(
            pl.DataFrame({"email": ["a@b"]}), token=TOKEN, **options(sandbox)
        )
    with pytest.raises(pipeline.UsageError, match="no API token"):
        pipeline.create_conversations(frame(1, 1))


# A value of the right form for each option the call does not carry out yet: refused for
# what it is, not for a bad value.
NOT_YET_VALUES: dict[str, object] = {
    "token_env": "OTHER_TOKEN",
    "token_file": "token.txt",
    "tokens_file": "tokens.toml",
    "oauth_file": "oauth.toml",
    "refresh_margin": 60.0,
    "shard": "0/2",
    "shard_count": 2,
    "merge": True,
    "fail_on": "failed",
    "notify": ["json://localhost/hook"],
    "notify_on": "always",
    "metrics_file": "metrics.prom",
    "pushgateway": "http://127.0.0.1:9091",
    "summary": "json",
}


def test_the_options_not_carried_out_yet_are_those_only_the_command_line_reads() -> None:
    """``NOT_YET`` is every setting that no module but the command line (``cli/``) reads
    (config.py's validators read theirs as ``self.NAME``): one the library starts honouring,
    or a new one only the command line reads, shows here."""
    package = Path(pipeline.__file__).parent
    texts = [p.read_text() for p in package.rglob("*.py") if p.parent.name != "cli"]
    validators = (package / "app" / "config.py").read_text()
    read = {
        name
        for name in pipeline.RunConfig.model_fields
        if any(re.search(rf"\bconfig\.{name}\b", text) for text in texts)
        or re.search(rf"\bself\.{name}\b", validators)
    }
    assert set(NOT_YET) == set(pipeline.RunConfig.model_fields) - read
    assert set(NOT_YET_VALUES) == set(NOT_YET)


@pytest.mark.parametrize("name", NOT_YET)
def test_an_option_the_call_does_not_carry_out_is_refused_by_name(name: str) -> None:
    """A dry run that would go through if the option were ignored."""
    option = {name: NOT_YET_VALUES[name]}
    with pytest.raises(pipeline.UsageError) as refused:
        pipeline.create_conversations(frame(1, 2), dry_run=True, **option)
    assert isinstance(refused.value, TypeError)  # as Python refuses an unexpected keyword
    message = str(refused.value)
    assert f"does not take {name}= yet" in message
    assert message.endswith("it takes: " + ", ".join(accepted()))
    assert "token, tokens, output, resume, overwrite, dry_run, base_url" in message
    assert not set(NOT_YET) & set(message.partition("it takes: ")[2].split(", "))

    async def call_async() -> pl.DataFrame:
        return await pipeline.create_conversations_async(frame(1, 2), dry_run=True, **option)

    with pytest.raises(OptionNotTaken, match=rf"does not take {name}= yet"):
        asyncio.run(call_async())


def test_unknown_and_not_yet_options_are_named_together() -> None:
    with pytest.raises(OptionNotTaken) as refused:
        pipeline.create_conversations(frame(1, 1), dry_run=True, colour="red", notify=[])
    assert "unknown option(s) colour and does not take notify= yet" in str(refused.value)


def test_errors_name_keyword_arguments_not_flags(sandbox: SandboxThread, tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    pipeline.create_conversations(frame(1, 2), token=TOKEN, output=out, **options(sandbox))
    sent = len(sandbox.state.requests())
    with pytest.raises(pipeline.UsageError) as exists:
        pipeline.create_conversations(frame(1, 2), token=TOKEN, output=out, **options(sandbox))
    assert "add overwrite=True to replace it, or resume=True to continue" in str(exists.value)
    assert "--" not in str(exists.value)
    out.unlink()
    journal = tmp_path / "results.parquet.journal"  # an unfinished run's
    journal.write_text("")
    with pytest.raises(pipeline.UsageError, match=r"add resume=True to continue it") as left:
        pipeline.create_conversations(frame(1, 2), token=TOKEN, output=out, **options(sandbox))
    assert "--resume" not in str(left.value)
    assert len(sandbox.state.requests()) == sent  # refused before sending
    with pytest.raises(pipeline.UsageError, match=r"^location_id='L 1': not a valid location"):
        pipeline.create_conversations(frame(1, 1), dry_run=True, location_id="L 1")


@pytest.mark.parametrize(
    ("said", "read"),
    [
        ("add --overwrite to replace it", "add overwrite=True to replace it"),
        ("--resume to continue", "resume=True to continue"),
        ("--rate 'lots': expected N/Ts", "rate='lots': expected N/Ts"),
        ("--known runs/x.parquet: no such file", "known=runs/x.parquet: no such file"),
        ("and --location-id was given", "and location_id=... was given"),
        ("(name one with --location-column, or", "(name one with location_column=..., or"),
        ("or add --override-location", "or add override_location=True"),
        ("choose another -o", "choose another output=..."),
        # not the call's keyword arguments: left as they are
        ("name another variable with --token-env", "name another variable with --token-env"),
        ("see `pipeline run --help`", "see `pipeline run --help`"),
        ("a non-option", "a non-option"),
    ],
)
def test_a_flag_is_named_as_its_keyword_argument(said: str, read: str) -> None:
    assert as_keywords(said) == read


def test_the_command_line_keeps_its_flags(tmp_path: Path) -> None:
    """The rewording is the call's alone."""
    source = write_csv(tmp_path / "in.csv", [("c1", "L1")])
    out = tmp_path / "results.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(out)
    done = run_cli("run", str(source), "-o", str(out), "--dry-run")
    assert done.code == 2
    assert "add --overwrite to replace it, or --resume to continue" in done.stderr
