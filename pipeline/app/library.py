"""The whole job as a Python call, for notebooks and scripts: rows in, results out.

``create_conversations(rows, token=..., **options)`` does what ``pipeline run`` does, with
the same guarantees (the per-location limits, retries, "already exists" resolved, a result
for every row, and a journal to resume from when ``output`` is given) and returns the
results as a polars DataFrame with the documented columns. ``rows`` is a polars DataFrame
with ``contactId``/``locationId`` columns (any of the names a file may use), or a path, glob
or URI as ``pipeline run`` takes. Options are ``pipeline run``'s, by their option names
(``rate="50/10s"``, ``max_attempts=3``, ``base_url=...``), validated the same way.

``run_conversations`` (and ``run_conversations_async``) is the same call returning the
run's typed summary (``observe.summary.RunSummary``): the counts, the plan, the exit code that
``pipeline run`` would have exited with and why (``--fail-on``), the advice, and the results
themselves (``.rows``). Every option of ``pipeline run`` is honoured as the command line
honours it, through the same path (``app.invocation``): tokens from ``token_env``,
``token_file``, ``tokens_file`` or ``oauth_file`` when neither ``token`` nor ``tokens`` is
given, ``shard``/``merge``, ``fail_on``, ``notify``, ``metrics_file``, ``pushgateway``. Only
``summary`` is refused: the call prints no summary, it returns it (its logs go to stderr).

``create_conversations_async`` is the form for code that already runs an event loop
(Jupyter does): the job runs on a worker thread with its own loop, so the caller's loop is
never blocked. Neither form installs signal handlers: Ctrl-C interrupts them as it
interrupts any Python call, and a run given an ``output`` continues with ``resume=True``.

Bad input or options raise ``UsageError`` with the command line's one-line message, worded
for Python: an option is named as its keyword argument (``resume=True``, ``rate='9'``), not
as a flag (``as_keywords``). An option the call does not take (``CLI_ONLY``: ``summary``)
is refused by name rather than ignored. A newer attempt that takes an object-storage
output's checkpoint over stops the call as Ctrl-C would and raises ``CheckpointTakenOver``:
the call never signals its own process, which is the caller's (a notebook's kernel).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline.app.config import RunConfig
from pipeline.app.invocation import job_for, perform, tokens_for
from pipeline.app.job import require_token
from pipeline.auth.tokens import Tokens
from pipeline.core import logs
from pipeline.core.errors import OptionNotTaken, UsageError
from pipeline.observe.summary import RunSummary
from pipeline.state.output_files import require_parquet_name

Rows = pl.DataFrame | str | Path

# ``pipeline run``'s options that only the command line has: the printed summary (the call
# returns its summary instead). Refused by name, never ignored.
CLI_ONLY: tuple[str, ...] = ("summary",)
# The call's own switches, which the command line spells --resume, --overwrite, --dry-run.
SWITCHES: tuple[str, ...] = ("resume", "overwrite", "dry_run")


def accepted() -> tuple[str, ...]:
    """Every keyword argument the call takes, the options in ``pipeline run --help``'s order."""
    options = (name for name in RunConfig.model_fields if name not in CLI_ONLY)
    return ("token", "tokens", "output", *SWITCHES, *options)


def run_conversations(
    rows: Rows,
    *,
    token: str | None = None,
    tokens: Mapping[str, str] | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    **options: Any,
) -> RunSummary:
    """Create a conversation for every (location, contact) row; return the run's summary,
    the results in its ``rows``.

    ``token``: the one token; ``tokens``: a token per location id instead (rows of a
    location it does not list end ``skipped`` / ``no_token``); neither: the tokens the
    options name (``token_env``, ``GHL_TOKEN`` by default, ``token_file``, ``tokens_file``,
    ``oauth_file``). ``output``: also write the results file there (Parquet, local or object
    storage), journalled so that a crash or an interruption can be continued with
    ``resume=True``; without it, the run works in a temporary folder that is removed
    afterwards.
    """
    try:
        return _run(rows, token, tokens, output, resume, overwrite, dry_run, options)
    except UsageError as exc:  # worded for the command line by the stage that raised it
        exc.args = (as_keywords(str(exc)),)
        raise


def create_conversations(
    rows: Rows,
    *,
    token: str | None = None,
    tokens: Mapping[str, str] | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    **options: Any,
) -> pl.DataFrame:
    """``run_conversations``, returning the results alone (a row per input row, the
    documented columns)."""
    summary = run_conversations(
        rows,
        token=token,
        tokens=tokens,
        output=output,
        resume=resume,
        overwrite=overwrite,
        dry_run=dry_run,
        **options,
    )
    assert summary.rows is not None  # run_conversations always reads them
    return summary.rows


def _run(
    rows: Rows,
    token: str | None,
    tokens: Mapping[str, str] | None,
    output: str | Path | None,
    resume: bool,
    overwrite: bool,
    dry_run: bool,
    options: dict[str, Any],
) -> RunSummary:
    config = _config(options)
    credentials = _tokens(token, tokens, config)
    if not structlog.is_configured():
        logs.configure(config.log_format, log_file=config.log_file)
    with tempfile.TemporaryDirectory(prefix="pipeline-") as scratch:
        source = _source(rows, Path(scratch))
        if output is None:
            where = str(Path(scratch) / "results.parquet")
        else:
            where = str(output)
            require_parquet_name(where)
        job = job_for(
            source, config, output=where, dry_run=dry_run, overwrite=overwrite or output is None
        )
        require_token(job, credentials, call=True)
        summary = perform(job, credentials, resume=resume)
        return replace(summary, rows=pl.read_parquet(summary.results))


async def run_conversations_async(
    rows: Rows,
    *,
    token: str | None = None,
    tokens: Mapping[str, str] | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    **options: Any,
) -> RunSummary:
    """``run_conversations`` for code inside an event loop: awaits the job, which runs on a
    worker thread with its own loop, so the caller's loop keeps serving."""
    _refuse_options(options)  # at once, before a thread is started
    return await asyncio.to_thread(
        run_conversations,
        rows,
        token=token,
        tokens=tokens,
        output=output,
        resume=resume,
        overwrite=overwrite,
        dry_run=dry_run,
        **options,
    )


async def create_conversations_async(
    rows: Rows,
    *,
    token: str | None = None,
    tokens: Mapping[str, str] | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    **options: Any,
) -> pl.DataFrame:
    """``create_conversations`` for code inside an event loop (``run_conversations_async``)."""
    summary = await run_conversations_async(
        rows,
        token=token,
        tokens=tokens,
        output=output,
        resume=resume,
        overwrite=overwrite,
        dry_run=dry_run,
        **options,
    )
    assert summary.rows is not None
    return summary.rows


def _config(options: dict[str, Any]) -> RunConfig:
    _refuse_options(options)
    from pipeline.app.config import load_config  # the same validation as the command line

    return load_config(options, None)


def _refuse_options(options: Mapping[str, Any]) -> None:
    """Refuse, by name, a keyword argument that is no option at all and one that the call
    does not take (``CLI_ONLY``), listing what it takes."""
    unknown = [name for name in options if name not in RunConfig.model_fields]
    cli_only = [name for name in options if name in CLI_ONLY]
    problems = []
    if unknown:
        problems.append(f"got unknown option(s) {', '.join(unknown)}")
    if cli_only:
        named = ", ".join(f"{name}=" for name in cli_only)
        problems.append(
            f"does not take {named} (the call prints no summary: it returns it, run_conversations)"
        )
    if problems:
        raise OptionNotTaken(
            f"create_conversations() {' and '.join(problems)}; it takes: {', '.join(accepted())}"
        )


# A flag (``--name``, or ``-o``), and the value after it if any: quoted, or a word up to a colon.
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o(?![\w-]))(?: ('[^']*'|\"[^\"]*\"|\S+(?=:)))?")


def as_keywords(message: str) -> str:
    """``message`` as a Python caller reads it: every option the call takes named as the
    keyword argument that gives it, not as the command line's flag. ``--overwrite`` is
    ``overwrite=True``, ``--rate '9'`` is ``rate='9'``, ``-o`` is ``output=...``, and a flag
    named with no value (``--location-id was given``) is ``location_id=...``. The stages
    word their errors for the command line, which most of them serve; this one rule at the
    call's boundary rewords them all. Flags the call does not take are left as they are."""
    takes = set(accepted())
    switches = {*SWITCHES, *(n for n, f in RunConfig.model_fields.items() if f.annotation is bool)}

    def keyword(match: re.Match[str]) -> str:
        flag, value = match.group(1), match.group(2)
        name = "output" if flag == "-o" else flag.removeprefix("--").replace("-", "_")
        if name not in takes:
            return match.group(0)
        if name in switches:
            return f"{name}=True" + ("" if value is None else f" {value}")
        return f"{name}={'...' if value is None else value}"

    return _FLAG.sub(keyword, message)


def _tokens(
    token: str | None, tokens: Mapping[str, str] | None, config: RunConfig
) -> Tokens | None:
    """The tokens given to the call; else those its options name, as the command line reads
    them (``app.invocation.tokens_for``)."""
    if token is not None and tokens is not None:
        raise UsageError("give token or tokens, not both")
    for value in [token, *(tokens or {}).values()]:
        if value:
            logs.register_secret(value)
    if tokens:
        sources = {
            location: "tokens[location] given to create_conversations" for location in tokens
        }
        return Tokens(by_location=dict(tokens), sources=sources)
    if token:
        return Tokens(default=token, default_source="token= given to create_conversations")
    return tokens_for(config, os.environ)


def _source(rows: Rows, scratch: Path) -> str:
    """What the run reads: a DataFrame is written to Parquet first, so it is read, checked
    and planned exactly as a file is."""
    if isinstance(rows, pl.DataFrame):
        path = scratch / "input.parquet"
        rows.write_parquet(path)
        return str(path)
    return str(rows)
