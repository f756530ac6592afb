"""The command group, the options of run, retry and check, and what they share: turning
the options into a job and its tokens (``job_and_tokens``).

The commands live beside it: ``commands`` (run, retry, check, and the entry point),
``files`` (report, merge), ``serve`` (sandbox).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.helpformat import FlowGroup
from pipeline.cli.options import stored_specs
from pipeline.core import logs

if TYPE_CHECKING:
    from pipeline.app.job import Job
    from pipeline.auth.tokens import Tokens


@click.group(
    cls=FlowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="pipeline")
def cli() -> None:
    """Bulk-create HighLevel (LeadConnector) conversations from CSV, Excel or Parquet files,
    as fast as the API's limits allow, with a result for every row."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


# What only a run does with its rows: a check (and a token export) reads the same input,
# tokens and connection, but writes no results, so these would be taken and ignored.
RUN_ONLY = frozenset(
    {"summary", "fail_on", "known", "notify", "notify_on", "metrics_file", "pushgateway"}
    | {"merge", "checkpoint_interval", "workers", "progress", "progress_interval"}
    | {"keep_columns"}
)
# How a run retries its requests and looks up ids: a check (and an export of tokens) sends
# one request a location, and neither retries nor looks anything up.
SEND_ONLY = frozenset({"max_attempts", "max_retry_wait", "lookup_wait", "daily_reserve"})
# Static tokens: an export mints tokens from --oauth-file alone.
STATIC_TOKENS = frozenset({"token_env", "token_file", "tokens_file"})


def _config_options(leave_out: frozenset[str] = frozenset()) -> list[Decorator]:
    """One option per configuration field (``config.RunConfig``): values are passed on as
    typed, and pydantic-settings validates them together with the environment and file."""
    options: list[Decorator] = []
    for flag, name, kind, help_text, metavar in stored_specs():
        if name in leave_out:
            continue
        if kind == "flag":
            options.append(click.option(flag, name, is_flag=True, default=None, help=help_text))
        elif kind == "multiple":  # repeatable
            options.append(click.option(flag, name, multiple=True, help=help_text, metavar=metavar))
        else:
            options.append(click.option(flag, name, default=None, help=help_text, metavar=metavar))
    return options


_CONFIG_FILE_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML file of settings (see configs/example.toml).",
)
_DEBUG_OPTION = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")

_RUN_OPTIONS: list[Decorator] = [
    click.option(
        "-o",
        "--output",
        type=str,
        required=True,
        help="Results Parquet file.",
    ),
    _CONFIG_FILE_OPTION,
    *_config_options(),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Validate and plan, send nothing, write skipped/dry_run rows.",
    ),
    click.option(
        "--resume",
        is_flag=True,
        help="Continue an interrupted or crashed run: keep what its journal and results hold.",
    ),
    click.option(
        "--overwrite", is_flag=True, help="Replace an existing output file (otherwise refused)."
    ),
    _DEBUG_OPTION,
]


def _applying(options: list[Decorator]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """One decorator that puts ``options`` on a command, in their order in its help."""

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


run_options = _applying(_RUN_OPTIONS)


RUN_EXAMPLES = (
    ("against the sandbox: start `pipeline sandbox`, paste the line it prints",
     "pipeline run data/sample.csv -o out/results.parquet"),
    ("one sub-account's contacts export, keeping a column to join back on",
     "pipeline run export.csv -o out/acme.parquet --location-id LOC --keep-columns Email"),
    ("validate and estimate, send nothing",
     "pipeline run contacts.csv -o out/plan.parquet --dry-run"),
    ("continue after Ctrl-C or a crash (every settled row is kept)",
     "pipeline run contacts.csv -o out/results.parquet --resume"),
    ("the problem rows as CSV, to fix and run again",
     "pipeline report out/results.parquet --rows failed,invalid,skipped --format csv "
     "-o out/problems.csv"),
)  # fmt: skip


def job_and_tokens(
    input_path: str, options: dict[str, Any], *, output: str
) -> tuple[Job, Tokens | None]:
    """The invocation and its tokens from the command's options (also sets up logging).

    Shared by ``run``/``retry`` and ``check``, so a check reads the input, the tokens and
    the connection exactly as the run it precedes will. A command without ``--dry-run`` or
    ``--overwrite`` counts as not asking for them; without a token, only a dry run goes on.
    """
    from pipeline.app.config import RunConfig, load_config
    from pipeline.app.invocation import job_for, tokens_for
    from pipeline.app.job import require_token

    given = {  # an option not given is None (a repeatable one, empty): not a value
        name: options[name]
        for name in RunConfig.model_fields
        if options.get(name) is not None and options.get(name) != ()
    }
    config = load_config(given, options["config_file"])
    log_level = logging.DEBUG if options["debug"] else logging.INFO
    tokens = tokens_for(config, os.environ)
    job = job_for(
        str(input_path),
        config,
        output=output,
        dry_run=options.get("dry_run", False),
        overwrite=options.get("overwrite", False),
        log_level=log_level,
        handle_signals=True,
        argv=(click.get_current_context().obj or {}).get("argv", sys.argv[1:]),
    )
    require_token(job, tokens)
    # After the usage errors, so that they reach the person (see commands._run_and_print).
    logs.configure(
        config.log_format,
        level=log_level,
        log_file=config.log_file,
        summary_table=config.summary == "table",
    )
    return job, tokens


def _probe_options(leave_out: frozenset[str]) -> list[Decorator]:
    """The options of a command that asks the API once a location (check, export-tokens)."""
    return [
        _CONFIG_FILE_OPTION,
        *_config_options(leave_out=leave_out),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
            help="A table to read, or one JSON document for scripts.",
        ),
        _DEBUG_OPTION,
    ]


CHECK_OPTIONS = _probe_options(RUN_ONLY | SEND_ONLY)
EXPORT_OPTIONS = _probe_options(RUN_ONLY | SEND_ONLY | STATIC_TOKENS)


check_options = _applying(CHECK_OPTIONS)
export_options = _applying(EXPORT_OPTIONS)
