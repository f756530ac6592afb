"""The command line: ``pipeline run``, ``retry`` and ``check``, and the entry point
(``main``) that runs every command (``files``: report, merge; ``serve``: sandbox).

Every way a command can go wrong before sending (bad option, bad config, bad file, missing
token) ends here as one line on stderr and exit 2; ``--debug`` adds the traceback.
Precedence of settings: command line > environment (``GHL_*``) > ``--config`` file > defaults
(merged and validated in one place, ``config.load_config``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import click

from pipeline.cli import files, oauth, serve  # noqa: F401 - their commands join the group
from pipeline.cli.group import (
    RUN_EXAMPLES,
    check_options,
    cli,
    job_and_tokens,
    run_options,
)
from pipeline.cli.helpformat import RUN_SECTIONS, SectionedCommand
from pipeline.core import logs
from pipeline.core.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_ROWS_NOT_DONE,
    EXIT_SIGINT,
    EXIT_USAGE,
    UsageError,
    one_line,
)
from pipeline.state.output_files import require_parquet_name


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=RUN_EXAMPLES,
    short_help="Create a conversation for every row of a CSV, Excel or Parquet file.",
)
@click.argument("input", type=str)
@run_options
def run(input: str, **options: Any) -> None:
    """Create a conversation for every (locationId, contactId) row of INPUT."""
    _run_and_print(input, options, retry_from=None)


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=(
        ("send again what did not settle, into a new complete results file",
         "pipeline retry out/results.parquet -o out/results-retry.parquet"),
    ),
    short_help="Send again the rows of a results file that did not settle.",
)  # fmt: skip
@click.argument("results", type=str)
@run_options
def retry(results: str, **options: Any) -> None:
    """Send again the rows of RESULTS that did not settle; write a complete new results file.

    Rows that failed for a reason a later attempt may not meet (429, 5xx, timeout, network,
    a rejected token, a refused location or scope) and skipped rows are sent; rows whose
    conversation exists without its id are searched for, never created; every other row
    keeps its outcome.
    """
    _run_and_print(results, options, retry_from=results)


def _run_and_print(input_path: str, options: dict[str, Any], *, retry_from: str | None) -> None:
    """Run (or retry), print the summary, exit with the verdict: the work is the app's
    (``app.invocation.perform``), the same as a Python call's."""
    require_parquet_name(options["output"])
    job, tokens = job_and_tokens(input_path, options, output=options["output"])
    # The heavy imports (polars, aiohttp) only once the options hold: --help and usage
    # errors answer without them (BENCHMARKS.md, "Start-up").
    from pipeline.app.invocation import perform
    from pipeline.observe.report import render

    summary = perform(job, tokens, resume=options["resume"], retry_from=retry_from)
    if job.config.summary == "json":
        click.echo(logs.scrub(json.dumps(summary.to_dict(), default=str)))
    elif job.config.summary == "table":
        if job.dry_run and summary.plan is not None:
            click.echo(summary.plan.render())
        click.echo(render(summary.report, "table", title=summary.results))
        click.echo(f"exit {summary.exit_code}: {summary.exit_reason}")
        for line in summary.advice:
            click.echo(logs.scrub(line))
        click.echo(logs.scrub(summary.next))
    if summary.stop_detail is not None:
        click.echo(f"pipeline: {logs.scrub(summary.stop_detail)}", err=True)
    sys.exit(summary.exit_code)


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=(
        ("what a run of this file would meet: tokens, access, scopes, live limits, time",
         "pipeline check contacts.csv"),
        ("the same, for a script", "pipeline check contacts.csv --format json"),
    ),
    short_help="Ask the API, once per location, what a run would meet; create nothing.",
)  # fmt: skip
@click.argument("input", type=str)
@check_options
def check(input: str, fmt: Literal["table", "json"], **options: Any) -> None:
    """Check, before a run, what it would meet: one search request per location of INPUT.

    Reads and validates INPUT like a run, then asks the API once per location whether its
    token is accepted, may use the location and may search, and what the live rate and
    daily limits are; estimates the sending time. Creates nothing. Exit 0 when every
    location can be sent (warnings allowed), 1 when one cannot, 2 for a usage error.
    """
    from pipeline.app.preflight import render as render_check
    from pipeline.app.preflight import run_check

    job, tokens = job_and_tokens(input, options, output=os.devnull)
    assert tokens is not None  # _job_and_tokens refuses a missing token unless dry run
    outcome = run_check(job, tokens)
    click.echo(logs.scrub(render_check(outcome, fmt)))
    if outcome.unreachable is not None:
        line = f"{job.config.base_url}: cannot reach the API: {outcome.unreachable}"
        click.echo(f"pipeline: {logs.scrub(one_line(line))}", err=True)
    sys.exit(EXIT_OK if outcome.ready else EXIT_ROWS_NOT_DONE)


def _temp_dir_for_polars(environ: MutableMapping[str, str]) -> None:
    """Polars finds its temporary folder through $HOME or $USER, and panics with neither
    (a container whose user has no passwd entry, a bare cron or systemd environment): name
    it, so such a run reads and writes its files like any other."""
    if not environ.get("HOME") and not environ.get("USER"):
        environ.setdefault("POLARS_TEMP_DIR", tempfile.gettempdir())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr, never a traceback
    (unless ``--debug``), and every message passes the same secret scrubbing as the logs."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _temp_dir_for_polars(os.environ)
    try:
        try:
            cli.main(args=args, prog_name="pipeline", standalone_mode=False, obj={"argv": args})
        finally:
            if argv is None:  # the process ends now: a Ctrl-C while it exits changes nothing
                _ignore_interrupts()
    except UsageError as exc:
        _fail(str(exc), exc.exit_code, debug, args)
    except click.exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None and exc.ctx.parent is None:  # bare `pipeline`: as gh and git,
            click.echo(exc.ctx.get_help())  # its help where `pipeline | less` reads it
            sys.exit(EXIT_OK)
        # `pipeline run` without its input: a usage error, with the command's help
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _fail(_usage_message(exc), EXIT_USAGE, debug, args)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _ignore_interrupts()  # a third Ctrl-C must not cut this line short
        _fail(_interrupted(args), EXIT_SIGINT, debug, args, kind="interrupted")
    except OSError as exc:  # disk full, permissions: say what and where, not how
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_INTERNAL, debug, args)
    except Exception as exc:
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            EXIT_INTERNAL,
            debug,
            args,
        )


def _usage_message(exc: click.ClickException) -> str:
    """Click's message; for a token given on the command line, why there is no such option
    (a command line shows in ps, shell history and cron mail) and what to use."""
    if isinstance(exc, click.NoSuchOption) and exc.option_name.split("=")[0] == "--token":
        return (
            "no --token option: a token on the command line shows in ps, shell history and "
            "logs; give it in GHL_TOKEN, a file (--token-file), or a tokens file (--tokens-file)"
        )
    return exc.format_message()


def _ignore_interrupts() -> None:
    """From here the process only says its last line and exits: a Ctrl-C landing now (the
    second of two quick ones) would escape ``main`` and kill it by SIGINT, with no line
    and no exit code of ours (Python re-raises an uncaught KeyboardInterrupt as a signal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupted(args: Sequence[str]) -> str:
    """A Ctrl-C outside the sending (while reading, planning or writing the results; the
    sending's own handler prints its line): a run or retry says how to continue, since
    ``--resume`` is right whatever was reached (the journal keeps what was settled; the
    results are written whole or not at all)."""
    if not args or args[0] not in ("run", "retry"):
        return "stopped"
    from pipeline.app.advice import resume_command

    return f"stopped before the end; continue with: {resume_command(args)}"


def _fail(
    message: str, code: int, debug: bool, args: Sequence[str] = (), *, kind: str = "error"
) -> None:
    """The one line of a fatal error on stderr: a JSON log line under ``--log-format json``,
    and with ``--summary json`` a JSON object on stdout too, so a script reading either
    finds the error where it reads the rest. The two settings are read from where the
    configuration comes from (``_given``), since it may be the configuration that failed."""
    if debug:
        click.echo(logs.scrub(traceback.format_exc()), err=True)
    text = logs.scrub(one_line(message))
    if _given(args, "--log-format") == "json":
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {"event": text, "exit_code": code, "level": "error", "timestamp": stamp}
        click.echo(json.dumps(event), err=True)
    else:
        click.echo(f"pipeline: {kind}: {text}", err=True)
    if _given(args, "--summary") == "json":
        click.echo(json.dumps({"exit_code": code, "error": f"pipeline: {kind}: {text}"}))
    sys.exit(code)


def _given(args: Sequence[str], option: str) -> str | None:
    """An option's value as the command line gives it (the last), else its ``GHL_*``
    variable's, else the ``--config`` file's: read from the sources themselves, since the
    configuration may be what failed."""
    value = _argument(args, option)
    if value is not None:
        return value
    from pipeline.app.config import ENV_PREFIX, read_config_file

    key = option.removeprefix("--").replace("-", "_")
    found = [v for name, v in os.environ.items() if name.upper() == ENV_PREFIX + key.upper()]
    if found:
        return found[0]
    config_file = _argument(args, "--config")
    if config_file is None:
        return None
    try:
        in_file = read_config_file(Path(config_file)).get(key)
    except UsageError:  # the file itself is what failed: its line says so
        return None
    return None if in_file is None else str(in_file)


def _argument(args: Sequence[str], option: str) -> str | None:
    """The last value ``args`` give ``option`` (``--x V`` or ``--x=V``)."""
    value = None
    for arg, after in zip(args, [*args[1:], None], strict=True):
        if arg == option and after is not None:
            value = after
        elif arg.startswith(f"{option}="):
            value = arg.split("=", 1)[1]
    return value
