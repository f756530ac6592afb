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
from pipeline.app.library import CLI_ONLY, accepted, as_keywords
from pipeline.core.errors import OptionNotTaken
from pipeline.sandbox import SandboxThread
from tests.conftest import TOKEN, run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits


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


def test_only_the_printed_summary_is_the_command_lines_alone() -> None:
    """Every setting is read outside the command line (``cli/``) but ``CLI_ONLY``: the call
    honours the rest through the same path (``app.invocation``). An option only the command
    line starts reading shows here (config.py's validators read theirs as ``self.NAME``)."""
    package = Path(pipeline.__file__).parent
    texts = [p.read_text() for p in package.rglob("*.py") if p.parent.name != "cli"]
    validators = (package / "app" / "config.py").read_text()
    read = {
        name
        for name in pipeline.RunConfig.model_fields
        if any(re.search(rf"\bconfig\.{name}\b", text) for text in texts)
        or re.search(rf"\bself\.{name}\b", validators)
    }
    assert set(CLI_ONLY) == set(pipeline.RunConfig.model_fields) - read == {"summary"}


def test_the_printed_summary_is_refused_by_name() -> None:
    with pytest.raises(pipeline.UsageError) as refused:
        pipeline.create_conversations(frame(1, 2), dry_run=True, summary="json")
    assert isinstance(refused.value, TypeError)  # as Python refuses an unexpected keyword
    message = str(refused.value)
    assert "does not take summary= (the call prints no summary: it returns it" in message
    assert message.endswith("it takes: " + ", ".join(accepted()))
    assert "token, tokens, output, resume, overwrite, dry_run, base_url" in message
    assert "summary" not in message.partition("it takes: ")[2].split(", ")

    async def call_async() -> pl.DataFrame:
        return await pipeline.create_conversations_async(frame(1, 2), dry_run=True, summary="x")

    with pytest.raises(OptionNotTaken, match=r"does not take summary="):
        asyncio.run(call_async())


def test_unknown_and_cli_only_options_are_named_together() -> None:
    with pytest.raises(OptionNotTaken) as refused:
        pipeline.create_conversations(frame(1, 1), dry_run=True, colour="red", summary="json")
    assert "unknown option(s) colour and does not take summary=" in str(refused.value)


# -- every other option is honoured, as the command line honours it --------------------------


def test_the_summary_says_the_verdict_that_fail_on_decides(sandbox: SandboxThread) -> None:
    rows = pl.concat([frame(1, 3), pl.DataFrame({"contactId": ["bad id!"], "locationId": ["L0"]})])
    kept = pipeline.run_conversations(rows, token=TOKEN, **options(sandbox))
    assert kept.exit_code == 1 and not kept.succeeded  # the invalid row, by default
    assert kept.exit_reason == "1 row matches --fail-on invalid,failed,skipped"
    assert kept.report.by_status == {"created": 3, "invalid": 1}
    assert kept.rows is not None and kept.rows.height == 4
    assert kept.next == ""  # no command line to paste
    lenient = pipeline.run_conversations(
        rows, token=TOKEN, fail_on="failed", overwrite=True, **options(sandbox)
    )
    assert lenient.exit_code == 0 and lenient.succeeded
    assert lenient.report.by_status == {"exists": 3, "invalid": 1}


def test_tokens_come_from_where_the_options_say(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GHL_TOKEN", raising=False)
    monkeypatch.setenv("OUR_TOKEN", TOKEN)
    by_env = pipeline.create_conversations(frame(1, 2), token_env="OUR_TOKEN", **options(sandbox))
    assert by_env["status"].to_list() == ["created"] * 2
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    by_file = pipeline.create_conversations(
        frame(1, 2), token_file=tmp_path / "token.txt", **options(sandbox)
    )
    assert by_file["status"].to_list() == ["exists"] * 2
    (tmp_path / "tokens.toml").write_text('[tokens]\nL0 = { env = "OUR_TOKEN" }\n')
    per_location = pipeline.create_conversations(
        frame(2, 1), tokens_file=tmp_path / "tokens.toml", **options(sandbox)
    )
    assert per_location["status"].to_list() == ["exists", "skipped"]  # L1 has no token
    with pytest.raises(pipeline.UsageError) as none:
        pipeline.create_conversations(frame(1, 1), **options(sandbox))
    assert str(none.value) == (
        "no API token: pass token=... (or tokens={location_id: token}), or set the environment "
        "variable GHL_TOKEN (or use token_file=..., tokens_file=... or oauth_file=...)"
    )


def test_oauth_credentials_sign_the_call(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.test_oauth import SECRET, configure, grants_for_locations, oauth_file

    grants = grants_for_locations(["L0"])
    configure(sandbox, grants)
    monkeypatch.setenv("GHL_CLIENT_SECRET", SECRET)
    monkeypatch.delenv("GHL_TOKEN", raising=False)
    summary = pipeline.run_conversations(
        frame(1, 3), oauth_file=oauth_file(tmp_path, grants), refresh_margin=60, **options(sandbox)
    )
    assert summary.report.by_status == {"created": 3}
    assert summary.report.run is not None and summary.report.run.token_refreshes == 1


def test_a_shard_writes_its_part_and_merge_writes_the_whole(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    out = tmp_path / "all.parquet"
    summary = pipeline.run_conversations(
        frame(2, 2), token=TOKEN, output=out, shard="0/1", merge=True, **options(sandbox)
    )
    assert summary.results == str(tmp_path / "all.part-00000-of-00001.parquet")
    assert pl.read_parquet(out)["status"].to_list() == ["created"] * 4  # merged


def test_others_are_told(sandbox: SandboxThread, tmp_path: Path) -> None:
    from tests.e2e.test_notify import Receiver

    hook = Receiver(200).start()
    try:
        prom = tmp_path / "pipeline.prom"
        summary = pipeline.run_conversations(
            frame(1, 2), token=TOKEN, notify=[hook.url], notify_on="always",
            metrics_file=prom, **options(sandbox),
        )  # fmt: skip
        assert summary.succeeded
        assert len(hook.received) == 1
        assert "pipeline_rows" in prom.read_text()
    finally:
        hook.stop()


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
        ("name another variable with --token-env", "name another variable with token_env=..."),
        ("--summary json", "--summary json"),  # the command line's alone: left as it is
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
