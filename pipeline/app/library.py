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

Bad input or options raise ``UsageError`` with the command line's one-line message, worded
for Python: an option is named as its keyword argument (``resume=True``, ``rate='9'``), not
as a flag (``as_keywords``). An option of ``pipeline run`` that the call does not carry out
yet (``NOT_YET``: ``notify``, ``fail_on``, ``shard``...) is refused by name rather than
ignored. A newer attempt that takes an object-storage output's checkpoint over stops the
call as Ctrl-C would and raises ``CheckpointTakenOver``: the call never signals its own
process, which is the caller's (a notebook's kernel).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from pipeline.app.config import RunConfig
from pipeline.app.job import Job
from pipeline.app.run import execute
from pipeline.auth.tokens import Tokens
from pipeline.core import logs
from pipeline.core.errors import OptionNotTaken, UsageError
from pipeline.state.outputs import OutputFiles, require_parquet_name

Rows = pl.DataFrame | str | Path

# ``pipeline run``'s options that only the command line carries out so far: where the token
# comes from (the call takes token= or tokens=), array jobs, the exit code, telling others,
# and the summary it prints. Refused by name, never ignored: a caller who passes
# notify=[...] expects to be notified. (A later issue makes the call honour them.)
NOT_YET: tuple[str, ...] = (
    "token_env",
    "token_file",
    "tokens_file",
    "oauth_file",
    "refresh_margin",
    "shard",
    "shard_count",
    "merge",
    "fail_on",
    "notify",
    "notify_on",
    "metrics_file",
    "pushgateway",
    "summary",
)
# The call's own switches, which the command line spells --resume, --overwrite, --dry-run.
SWITCHES: tuple[str, ...] = ("resume", "overwrite", "dry_run")


def accepted() -> tuple[str, ...]:
    """Every keyword argument the call takes, the options in ``pipeline run --help``'s order."""
    options = (name for name in RunConfig.model_fields if name not in NOT_YET)
    return ("token", "tokens", "output", *SWITCHES, *options)


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
    try:
        return _create(rows, token, tokens, output, resume, overwrite, dry_run, options)
    except UsageError as exc:  # worded for the command line by the stage that raised it
        exc.args = (as_keywords(str(exc)),)
        raise


def _create(
    rows: Rows,
    token: str | None,
    tokens: Mapping[str, str] | None,
    output: str | Path | None,
    resume: bool,
    overwrite: bool,
    dry_run: bool,
    options: dict[str, Any],
) -> pl.DataFrame:
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
    _refuse_options(options)  # at once, before a thread is started
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
    _refuse_options(options)
    from pipeline.app.config import load_config  # the same validation as the command line

    return load_config(options, None)


def _refuse_options(options: Mapping[str, Any]) -> None:
    """Refuse, by name, a keyword argument that is no option at all and one that the call
    does not carry out yet (``NOT_YET``), listing what it takes."""
    unknown = [name for name in options if name not in RunConfig.model_fields]
    not_yet = [name for name in options if name in NOT_YET]
    problems = []
    if unknown:
        problems.append(f"got unknown option(s) {', '.join(unknown)}")
    if not_yet:
        named = ", ".join(f"{name}=" for name in not_yet)
        problems.append(f"does not take {named} yet (only `pipeline run` carries it out)")
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
