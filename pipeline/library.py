"""The whole job as a Python call, for notebooks and scripts: rows in, results out.

``create_conversations(rows, token=..., **options)`` does what ``pipeline run`` does, with
the same guarantees (the per-location limits, retries, "already exists" resolved, a result
for every row, and a journal to resume from when ``output`` is given) and returns the
results as a polars DataFrame with the documented columns. ``rows`` is a polars DataFrame
with ``contactId``/``locationId`` columns (any of the names a file may use), or a path, glob
or URI as ``pipeline run`` takes. Options are ``pipeline run``'s, by their option names
(``rate="50/10s"``, ``max_attempts=3``, ``base_url=...``), validated the same way.

``create_conversations_async`` is the form for code that already runs an event loop
(Jupyter does): the job runs on a worker thread with its own loop, so the caller's loop is
never blocked. Neither form installs signal handlers: Ctrl-C interrupts them as it
interrupts any Python call, and a run given an ``output`` continues with ``resume=True``.

Bad input or options raise ``UsageError`` with the same one-line message the command line
prints.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline import logs
from pipeline.config import RunConfig
from pipeline.errors import UsageError
from pipeline.job import Job
from pipeline.outputs import OutputFiles, require_parquet_name
from pipeline.run import execute
from pipeline.tokens import Tokens

Rows = pl.DataFrame | str | Path


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
    """Create a conversation for every (location, contact) row; return the results.

    ``token``: the one token; ``tokens``: a token per location id instead (rows of a
    location it does not list end ``skipped`` / ``no_token``). ``output``: also write the
    results file there (Parquet, local or object storage), journalled so that a crash or an
    interruption can be continued with ``resume=True``; without it, the run works in a
    temporary folder that is removed afterwards.
    """
    config = _config(options)
    credentials = _tokens(token, tokens, dry_run=dry_run)
    if not structlog.is_configured():
        logs.configure(config.log_format, log_file=config.log_file)
    with tempfile.TemporaryDirectory(prefix="pipeline-") as scratch:
        source = _source(rows, Path(scratch))
        if output is None:
            files = OutputFiles(Path(scratch) / "results.parquet")
        else:
            require_parquet_name(str(output))
            files = OutputFiles.of(str(output), config.state_dir)
        job = Job(config, source, files, dry_run=dry_run, overwrite=overwrite or output is None)
        execute(job, credentials, resume=resume)
        return pl.read_parquet(files.results)


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
    """``create_conversations`` for code inside an event loop: awaits the job, which runs
    on a worker thread with its own loop, so the caller's loop keeps serving."""
    return await asyncio.to_thread(
        create_conversations,
        rows,
        token=token,
        tokens=tokens,
        output=output,
        resume=resume,
        overwrite=overwrite,
        dry_run=dry_run,
        **options,
    )


def _config(options: dict[str, Any]) -> RunConfig:
    unknown = sorted(set(options) - set(RunConfig.model_fields))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; see `pipeline run --help`")
    from pipeline.config import load_config  # the same validation as the command line

    return load_config(options, None)


def _tokens(token: str | None, tokens: Mapping[str, str] | None, *, dry_run: bool) -> Tokens | None:
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
    if dry_run:
        return None
    raise UsageError("no API token: pass token=... (or tokens={location_id: token})")


def _source(rows: Rows, scratch: Path) -> str:
    """What the run reads: a DataFrame is written to Parquet first, so it is read, checked
    and planned exactly as a file is."""
    if isinstance(rows, pl.DataFrame):
        path = scratch / "input.parquet"
        rows.write_parquet(path)
        return str(path)
    return str(rows)
