"""The command line: ``pipeline run``, ``pipeline sandbox``.

Every way a command can go wrong before sending (bad option, bad config, bad file, missing
token) ends here as one line on stderr and exit 2; ``--debug`` adds the traceback.
Precedence of settings: command line > environment (``GHL_*``) > ``--config`` file > defaults
(click's own order for explicit values, environment variables and ``default_map``).
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline import constants, logs
from pipeline.errors import UsageError
from pipeline.report import ReportFormat, build_report, read_results, render
from pipeline.settings import (
    DEFAULT_ID_MAX_LENGTH,
    DEFAULT_ID_PATTERN,
    RunSettings,
    check_base_url,
    parse_rate,
)
from pipeline.tokens import Tokens, load_tokens_file
from pipeline.transport import HTTP_STACKS

EXIT_OK = 0
EXIT_ROWS_NOT_DONE = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, or the machine refused (disk full, permissions)


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read a TOML config into click's default_map, so explicit options and env vars win."""
    if value is None:
        return None
    path = Path(value)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"--config {value}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {value}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {value}: not valid TOML ({exc})") from exc
    table = data.get("run", data) if isinstance(data.get("run"), dict) else data
    # A key is a long option name (hyphens or underscores): "max-attempts", "timeout".
    known = {
        opt[2:].replace("-", "_"): param.name
        for param in ctx.command.params
        if isinstance(param, click.Option) and param.name not in {"output", "config", "resume"}
        for opt in param.opts
        if opt.startswith("--") and param.name
    }
    defaults: dict[str, Any] = {}
    for key, item in table.items():
        name = known.get(key.replace("-", "_"))
        if name is None:
            listed = ", ".join(sorted(k.replace("_", "-") for k in known))
            raise UsageError(f"--config {value}: unknown key {key!r}; known keys are {listed}")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pipeline")
def cli() -> None:
    """Bulk-create HighLevel (LeadConnector) conversations from CSV or Parquet."""


_RUN_OPTIONS = [
    click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path),
        required=True,
        help="Results Parquet file.",
    ),
    click.option(
        "--config",
        callback=_load_config,
        is_eager=True,
        expose_value=False,
        help="TOML file of option defaults.",
    ),
    click.option(
        "--base-url", envvar="GHL_BASE_URL", default=constants.DEFAULT_BASE_URL, show_default=True
    ),
    click.option(
        "--api-version",
        envvar="GHL_API_VERSION",
        default=constants.DEFAULT_API_VERSION,
        show_default=True,
    ),
    click.option(
        "--rate",
        envvar="GHL_RATE",
        default="100/10s",
        show_default=True,
        help="Per-location limit, N/Ts.",
    ),
    click.option(
        "--concurrency",
        envvar="GHL_CONCURRENCY",
        type=click.IntRange(1, 4096),
        default=64,
        show_default=True,
        help="Requests in flight at most, across all locations.",
    ),
    click.option(
        "--timeout",
        "timeout_s",
        envvar="GHL_TIMEOUT",
        type=click.FloatRange(0.1, 600),
        default=30.0,
        show_default=True,
        help="Seconds per request.",
    ),
    click.option(
        "--max-attempts",
        envvar="GHL_MAX_ATTEMPTS",
        type=click.IntRange(1, 100),
        default=5,
        show_default=True,
    ),
    click.option(
        "--max-retry-wait",
        "max_total_backoff_s",
        type=click.FloatRange(0, 86_400),
        default=300.0,
        show_default=True,
        help="Seconds a row may spend waiting between its attempts, in all.",
    ),
    click.option(
        "--backoff-base",
        "backoff_base_s",
        type=click.FloatRange(0.001, 60),
        default=0.5,
        show_default=True,
        help="Seconds: the first retry waits up to this, doubling each attempt (capped at 30).",
    ),
    click.option(
        "--contact-column", default=None, help="The contact ID column, if not contactId/contact_id."
    ),
    click.option(
        "--location-column",
        default=None,
        help="The location ID column, if not locationId/location_id.",
    ),
    click.option(
        "--id-pattern",
        default=DEFAULT_ID_PATTERN,
        show_default=True,
        help="Regex an ID must fully match.",
    ),
    click.option(
        "--id-max-length",
        type=click.IntRange(1, 10_000),
        default=DEFAULT_ID_MAX_LENGTH,
        show_default=True,
    ),
    click.option(
        "--token-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Read the token from this file (instead of the environment).",
    ),
    click.option(
        "--tokens-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML or CSV mapping each location to its own token's variable or file.",
    ),
    click.option(
        "--overwrite", is_flag=True, help="Replace an existing output file (otherwise refused)."
    ),
    click.option(
        "--token-env",
        default="GHL_TOKEN",
        show_default=True,
        help="Environment variable holding the token.",
    ),
    click.option(
        "--allow-insecure-http",
        is_flag=True,
        help="Allow an http:// base URL that is not loopback.",
    ),
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
        "--daily-quota",
        type=click.IntRange(1),
        default=constants.DEFAULT_DAILY_LIMIT,
        show_default=True,
        help="Requests per location per day, for the dry-run estimate.",
    ),
    click.option(
        "--workers",
        envvar="GHL_WORKERS",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Processes sending at once; each owns whole locations.",
    ),
    click.option(
        "--http-stack",
        type=click.Choice(HTTP_STACKS),
        default="aiohttp",
        show_default=True,
        help="HTTP client library behind the API client.",
    ),
    click.option(
        "--progress",
        type=click.Choice(["auto", "bar", "log", "none"]),
        default="auto",
        show_default=True,
        help="A live bar (auto: on a terminal), structured log lines, or nothing.",
    ),
    click.option(
        "--progress-interval",
        "progress_interval_s",
        type=click.FloatRange(0.1, 3600),
        default=5.0,
        show_default=True,
        help="Seconds between progress log lines.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["auto", "json", "console"]),
        default="auto",
        show_default=True,
    ),
    click.option("--debug", is_flag=True, help="Show tracebacks and debug logs."),
]


def _run_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


@cli.command()
@click.argument("input", type=click.Path(path_type=Path))
@_run_options
def run(input: Path, **options: Any) -> None:
    """Create a conversation for every (locationId, contactId) row of INPUT."""
    _execute(input, options, retry_from=None)


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@_run_options
def retry(results: Path, **options: Any) -> None:
    """Send again the rows of RESULTS that did not settle; write a complete new results file.

    Rows that failed for a transient reason (429, 5xx, timeout, network, rejected token) and
    skipped rows are sent; every other row keeps its outcome.
    """
    _execute(results, options, retry_from=results)


def _execute(input_path: Path, options: dict[str, Any], *, retry_from: Path | None) -> None:
    from pipeline.run import execute  # the heavy imports (polars, httpx) only when running

    logs.configure(options["log_format"], level=logging.DEBUG if options["debug"] else logging.INFO)
    token_env: str = options["token_env"]
    tokens: Tokens | None
    if options["tokens_file"] is not None:
        tokens = load_tokens_file(options["tokens_file"], os.environ)
    else:
        token = _read_token(options["token_file"], token_env)
        tokens = Tokens(default=token) if token else None
    settings = RunSettings(
        input_path=input_path,
        output_path=options["output"],
        base_url=check_base_url(
            options["base_url"], allow_insecure_http=options["allow_insecure_http"]
        ),
        api_version=options["api_version"],
        rate=parse_rate(options["rate"]),
        concurrency=options["concurrency"],
        timeout_s=options["timeout_s"],
        max_attempts=options["max_attempts"],
        max_total_backoff_s=options["max_total_backoff_s"],
        backoff_base_s=options["backoff_base_s"],
        contact_column=options["contact_column"],
        location_column=options["location_column"],
        id_pattern=options["id_pattern"],
        id_max_length=options["id_max_length"],
        dry_run=options["dry_run"],
        overwrite=options["overwrite"],
        daily_quota=options["daily_quota"],
        http_stack=options["http_stack"],
        workers=options["workers"],
        progress=options["progress"],
        progress_interval_s=options["progress_interval_s"],
        log_format=options["log_format"],
        log_level=logging.DEBUG if options["debug"] else logging.INFO,
    )
    if tokens is None and not settings.dry_run:
        raise UsageError(
            f"no API token: set the environment variable {token_env} (or use --token-file)"
        )
    result = execute(settings, tokens, resume=options["resume"], retry_from=retry_from)
    if settings.dry_run and result.plan is not None:
        click.echo(result.plan.render())
    click.echo(render(result.report, "table", title=str(settings.output_path)))
    if result.signal is not None:
        sys.exit(128 + result.signal)
    sys.exit(EXIT_OK if result.report.all_succeeded else EXIT_ROWS_NOT_DONE)


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
def report(results: Path, fmt: ReportFormat) -> None:
    """Summarise a results file: statuses, error codes, locations, top failures, throughput."""
    frame, run = read_results(results)
    click.echo(render(build_report(frame, run), fmt, title=str(results)))


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
    click.echo(f"pipeline: error: {logs.scrub(' '.join(message.split()))}", err=True)
    sys.exit(code)
