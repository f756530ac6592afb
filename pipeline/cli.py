"""The command line: ``pipeline run``, ``retry``, ``check``, ``report`` and ``sandbox``.

Every way a command can go wrong before sending (bad option, bad config, bad file, missing
token) ends here as one line on stderr and exit 2; ``--debug`` adds the traceback.
Precedence of settings: command line > environment (``GHL_*``) > ``--config`` file > defaults
(merged and validated in one place, ``config.load_config``).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from pipeline import logs
from pipeline.config import RunConfig, load_config, option_specs
from pipeline.errors import UsageError, one_line
from pipeline.job import Job
from pipeline.outputs import OutputFiles, require_parquet_name
from pipeline.settings import parse_fail_on
from pipeline.tokens import Tokens, load_tokens_file

if TYPE_CHECKING:
    from pipeline.report import Report

EXIT_OK = 0
EXIT_ROWS_NOT_DONE = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, or the machine refused (disk full, permissions)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pipeline")
def cli() -> None:
    """Bulk-create HighLevel (LeadConnector) conversations from CSV or Parquet."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _config_options() -> list[Decorator]:
    """One option per configuration field (``config.RunConfig``): values are passed on as
    typed, and pydantic-settings validates them together with the environment and file."""
    options: list[Decorator] = []
    for flag, name, default, help_text, metavar in option_specs():
        if isinstance(default, bool):
            options.append(click.option(flag, name, is_flag=True, default=None, help=help_text))
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


def _run_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


@cli.command(no_args_is_help=True)
@click.argument("input", type=str)
@_run_options
def run(input: str, **options: Any) -> None:
    """Create a conversation for every (locationId, contactId) row of INPUT."""
    _execute(input, options, retry_from=None)


@cli.command(no_args_is_help=True)
@click.argument("results", type=str)
@_run_options
def retry(results: str, **options: Any) -> None:
    """Send again the rows of RESULTS that did not settle; write a complete new results file.

    Rows that failed for a transient reason (429, 5xx, timeout, network, rejected token) and
    skipped rows are sent; every other row keeps its outcome.
    """
    _execute(results, options, retry_from=results)


def _execute(input_path: str, options: dict[str, Any], *, retry_from: str | None) -> None:
    require_parquet_name(options["output"])
    job, tokens = _job_and_tokens(input_path, options, output=options["output"])
    # The heavy imports (polars, aiohttp) only once the options hold: --help and usage
    # errors answer without them (BENCHMARKS.md, "Start-up").
    from pipeline.report import count_matching, render
    from pipeline.run import execute

    result = execute(job, tokens, resume=options["resume"], retry_from=retry_from)
    if job.dry_run and result.plan is not None:
        click.echo(result.plan.render())
    click.echo(render(result.report, "table", title=str(job.files.results)))
    if result.signal is not None:
        code = 128 + result.signal
        click.echo(f"exit {code}: interrupted; continue with the same command and --resume")
    else:
        statuses, codes = parse_fail_on(job.config.fail_on)
        failing = count_matching(job.files.results, statuses, codes)
        code = EXIT_ROWS_NOT_DONE if failing else EXIT_OK
        click.echo(f"exit {code}: {failing} rows match --fail-on {job.config.fail_on}")
    click.echo(_next_step(result.report, str(job.files.results), job.dry_run))
    if result.stop_detail is not None:
        click.echo(f"pipeline: {logs.scrub(result.stop_detail)}", err=True)
    sys.exit(code)


def _next_step(report: Report, results: str, dry_run: bool) -> str:
    """The command to run next, so a person never has to guess how to look further."""
    problems = report.problem_rows
    if dry_run or not problems:
        return f"next: pipeline report {results}"
    stem = results.rsplit("/", 1)[-1].removesuffix(".parquet")
    folder = results.rsplit("/", 1)[0] + "/" if "/" in results else ""
    return (
        f"next: {problems} rows need attention: pipeline report {results} "
        f"--rows failed,invalid,skipped --format csv -o {folder}{stem}-problems.csv"
    )


def _job_and_tokens(
    input_path: str, options: dict[str, Any], *, output: str
) -> tuple[Job, Tokens | None]:
    """The invocation and its tokens from the command's options (also sets up logging).

    Shared by ``run``/``retry`` and ``check``, so a check reads the input, the tokens and
    the connection exactly as the run it precedes will. A command without ``--dry-run`` or
    ``--overwrite`` counts as not asking for them; without a token, only a dry run goes on.
    """
    given = {
        name: options[name] for name in RunConfig.model_fields if options.get(name) is not None
    }
    config = load_config(given, options["config_file"])
    log_level = logging.DEBUG if options["debug"] else logging.INFO
    tokens: Tokens | None
    if config.tokens_file is not None:
        tokens = load_tokens_file(config.tokens_file, os.environ)
    else:
        token = _read_token(config.token_file, config.token_env)
        tokens = Tokens(default=token) if token else None
    job = Job(
        config=config,
        source=str(input_path),
        files=OutputFiles.of(output, config.state_dir),
        dry_run=options.get("dry_run", False),
        overwrite=options.get("overwrite", False),
        log_level=log_level,
        handle_signals=True,
    )
    if tokens is None and not job.dry_run:
        raise UsageError(
            f"no API token: set the environment variable {config.token_env} (or use --token-file)"
        )
    logs.configure(config.log_format, level=log_level)  # after the usage errors: see _execute
    return job, tokens


_CHECK_OPTIONS: list[Decorator] = [
    _CONFIG_FILE_OPTION,
    *_config_options(),
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


def _check_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_CHECK_OPTIONS):
        command = option(command)
    return command


@cli.command(no_args_is_help=True)
@click.argument("input", type=str)
@_check_options
def check(input: str, fmt: Literal["table", "json"], **options: Any) -> None:
    """Check, before a run, what it would meet: one search request per location of INPUT.

    Reads and validates INPUT like a run, then asks the API once per location whether its
    token is accepted, may use the location and may search, and what the live rate and
    daily limits are; estimates the sending time. Creates nothing. Exit 0 when every
    location can be sent (warnings allowed), 1 when one cannot, 2 for a usage error.
    """
    from pipeline.preflight import render as render_check
    from pipeline.preflight import run_check

    job, tokens = _job_and_tokens(input, options, output=os.devnull)
    assert tokens is not None  # _job_and_tokens refuses a missing token unless dry run
    outcome = run_check(job, tokens)
    click.echo(logs.scrub(render_check(outcome, fmt)))
    if outcome.unreachable is not None:
        line = f"{job.config.base_url}: cannot reach the API: {outcome.unreachable}"
        click.echo(f"pipeline: {logs.scrub(one_line(line))}", err=True)
    sys.exit(EXIT_OK if outcome.ready else EXIT_ROWS_NOT_DONE)


@cli.command(no_args_is_help=True)
@click.argument("results", type=str)
@click.option(
    "--rows",
    "statuses",
    default=None,
    metavar="STATUSES",
    help="List the rows of these statuses (comma-separated, e.g. failed,invalid,skipped; "
    "or all) instead of the summary.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "csv"]),
    default="table",
    show_default=True,
    help="csv lists rows (all of them without --rows), with every column.",
)
@click.option("-o", "--output", default=None, help="Write to FILE instead of standard output.")
def report(
    results: str,
    statuses: str | None,
    fmt: Literal["table", "json", "markdown", "csv"],
    output: str | None,
) -> None:
    """Summarise a results file (statuses, error codes, locations, top failures, throughput),
    or list some of its rows: `pipeline report out/results.parquet --rows failed,invalid
    --format csv -o problems.csv`, fix the IDs there, and run that file."""
    from pipeline.report import build_report, read_results, render, render_rows, select_rows

    frame, run = read_results(results)
    if statuses is None and fmt != "csv":
        text = render(build_report(frame, run), fmt, title=str(results))
    else:
        text = render_rows(select_rows(frame, statuses or "all"), fmt)
    if output is None:
        click.echo(text.rstrip("\n"))
        return
    try:
        Path(output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {output}: cannot be written ({exc.strerror or exc})") from exc


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sandbox(args: tuple[str, ...]) -> None:
    """Serve a local imitation of HighLevel's API (token: sandbox-token); --help for options."""
    from pipeline.sandbox.__main__ import main as sandbox_main

    sys.exit(sandbox_main(list(args)))


def _read_token(token_file: Path | None, token_env: str) -> str | None:
    """The token, from a file (read once) or the environment; never from the command line.

    It is registered with the log redaction before anything else can see it.
    """
    if token_file is not None:
        try:
            raw = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"--token-file {token_file}: cannot be read ({type(exc).__name__})"
            ) from exc
        token = raw.strip() or None
        if token is None:
            raise UsageError(f"--token-file {token_file}: the file is empty")
    else:
        token = (os.environ.get(token_env) or "").strip() or None
    if token is not None:
        if any(ch.isspace() for ch in token):
            logs.register_secret(token)
            raise UsageError("the token holds whitespace inside it; check its source")
        logs.register_secret(token)
    return token


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr, never a traceback
    (unless ``--debug``), and every message passes the same secret scrubbing as the logs."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="pipeline", standalone_mode=False)
    except UsageError as exc:
        _fail(str(exc), exc.exit_code, debug)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `pipeline`, `pipeline run`
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), EXIT_USAGE, debug)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(EXIT_SIGINT)
    except OSError as exc:  # disk full, permissions: say what and where, not how
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_INTERNAL, debug)
    except Exception as exc:
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            EXIT_INTERNAL,
            debug,
        )


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        click.echo(logs.scrub(traceback.format_exc()), err=True)
    click.echo(f"pipeline: error: {logs.scrub(one_line(message))}", err=True)
    sys.exit(code)
