"""What to do next: the lines a person reads after a run, and the command to run next.

A run that stopped short of its rows leaves a person to decide: wait for the quota, fix a
token, continue an interrupted run, or look at the problem rows. These lines say which,
name what is known (the locations, where their token came from) and end with a command that
works when pasted. They are computed from the results file, so they say the same thing
whether the run stopped in this process or in workers, and never repeat a token: only
where it came from.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.auth.oauth_http import REFRESH_REFUSED
from pipeline.core.errors import plural
from pipeline.core.outcomes import Code
from pipeline.core.values import is_uri

# The rows of a stop, by the code that stopped them (whatever their status: the row that
# drew a 401 is failed, the rest of its token's rows skipped).
_STOPS = (
    Code.UNAUTHORIZED,
    Code.FORBIDDEN,
    Code.DAILY_QUOTA_EXHAUSTED,
    Code.NO_TOKEN,
    Code.NOT_INSTALLED,
    Code.UNREACHABLE,
    Code.STALLED,
    Code.CREDENTIALS_LOCKED,
    Code.ID_NOT_FOUND_YET,
)
_SHOWN_LOCATIONS = 3


@dataclass(frozen=True, slots=True)
class Advice:
    lines: list[str]  # what happened and what to do, one stop a line
    next: str  # the command to run next


def _stopped(results: str) -> dict[str, dict[str, int]]:
    """Rows per location for each stop code present in the results."""
    grouped = (
        pl.scan_parquet(results)
        .filter(pl.col("error_code").is_in([code.value for code in _STOPS]))
        .group_by("error_code", "location_id")
        .len()
        .sort("len", "location_id", descending=[True, False])
        .collect()
    )
    stops: dict[str, dict[str, int]] = {}
    for code, location, rows in grouped.iter_rows():
        stops.setdefault(code, {})[location or "(none)"] = rows
    return stops


def _refresh_refused(results: str) -> set[str]:
    """The locations whose OAuth refresh token HighLevel refused (spent or revoked): their
    401 is not a token to replace, but an installation to reconnect."""
    refused = (
        pl.scan_parquet(results)
        .filter(
            (pl.col("error_code") == Code.UNAUTHORIZED.value)
            & pl.col("error_message").str.contains(REFRESH_REFUSED, literal=True)
        )
        .select(pl.col("location_id").unique())
        .collect()
    )
    return set(refused["location_id"].drop_nulls().to_list())


def _locations(rows_by_location: dict[str, int]) -> str:
    names = list(rows_by_location)
    shown = ", ".join(names[:_SHOWN_LOCATIONS])
    more = f" and {len(names) - _SHOWN_LOCATIONS} more" if len(names) > _SHOWN_LOCATIONS else ""
    return f"{plural(len(names), 'location')} ({shown}{more})"


def _rows(rows_by_location: dict[str, int]) -> str:
    return plural(sum(rows_by_location.values()), "row", grouped=True)


def _oauth(source: str) -> bool:
    """Whether a token's source (``Tokens.source``) is an OAuth credentials file."""
    return source.startswith("--oauth-file ")


def advise(
    results: str,
    *,
    argv: Sequence[str] | None,
    token_source: Callable[[str], str],
    problem_rows: int,
    interrupted: bool,
    dry_run: bool,
    shard: str | None = None,
) -> Advice:
    """The lines and the next command for a finished (or interrupted) run.

    ``argv``: the command line as given (after ``pipeline``), to build the next command
    from (None: a Python call, which has no command to print); ``token_source``: where a
    location's token came from; ``shard``: the part this run sent (``K/N``), when it is a
    task of an array job.
    """
    stops = {} if dry_run else _stopped(results)
    lines: list[str] = []
    rejected = stops.get(Code.UNAUTHORIZED.value, {})
    spent = _refresh_refused(results) if rejected else set()
    by_source: dict[tuple[str, bool], dict[str, int]] = {}
    for location, rows in rejected.items():
        by_source.setdefault((token_source(location), location in spent), {})[location] = rows
    for (source, was_spent), rows_by_location in by_source.items():
        lines.append(
            f"refresh token refused (spent or revoked): HighLevel refused the refresh token "
            f"of {source}, used for {_locations(rows_by_location)}; "
            f"{_rows(rows_by_location)} not sent. Reconnect the app in HighLevel (or install "
            "it again) and put the new refresh token in the --oauth-file, then retry."
            if was_spent
            else f"token rejected (401): the token from {source}, used for "
            f"{_locations(rows_by_location)}; {_rows(rows_by_location)} not sent. "
            "Replace the token, then retry."
        )
    refused = stops.get(Code.FORBIDDEN.value, {})
    if refused:
        sources = sorted({token_source(location) for location in refused})
        lines.append(
            f"refused (403): {_locations(refused)} may not be used with the token from "
            f"{' / '.join(sources)}; {_rows(refused)} not sent. Use the location's own "
            "token (--tokens-file), then retry."
        )
    quota = stops.get(Code.DAILY_QUOTA_EXHAUSTED.value, {})
    if quota:
        lines.append(
            f"daily quota spent: {_locations(quota)}; {_rows(quota)} not sent yet. "
            "HighLevel does not say when its day turns: run the same command with --resume "
            "later (within a day); it sends only the rows not yet sent."
        )
    no_token = stops.get(Code.NO_TOKEN.value, {})
    oauth = {token_source(location) for location in no_token if _oauth(token_source(location))}
    if no_token and oauth:  # an OAuth run has no tokens file: its file lacks a credential
        lines.append(
            f"no token: {_locations(no_token)}: {' / '.join(sorted(oauth))}; "
            f"{_rows(no_token)} not sent. Install the app on those sub-accounts and put each "
            "installation's refresh token in the --oauth-file (or the agency's, whose token "
            "mints one for every sub-account where the app is installed), then retry."
        )
    elif no_token:
        lines.append(
            f"no token: the tokens file lists no token for {_locations(no_token)}; "
            f"{_rows(no_token)} not sent. Add them to the tokens file, then retry."
        )
    not_installed = stops.get(Code.NOT_INSTALLED.value, {})
    if not_installed:
        lines.append(
            f"not installed: the app is not installed at {_locations(not_installed)}, so no "
            f"token can be minted there; {_rows(not_installed)} not sent. Install the app "
            "there, then retry."
        )
    unreachable = stops.get(Code.UNREACHABLE.value, {})
    if unreachable:
        lines.append(
            f"API unreachable: {_rows(unreachable)} not sent. Check the network and "
            "--base-url, then retry."
        )
    stalled = stops.get(Code.STALLED.value, {})
    if stalled:
        lines.append(
            f"stalled: the run made no progress and stopped itself; {_rows(stalled)} not "
            "sent. This is a bug: please report it with the log, then retry."
        )
    locked = stops.get(Code.CREDENTIALS_LOCKED.value, {})
    if locked:
        lines.append(
            f"OAuth credentials locked: another run held --oauth-file's lock; {_rows(locked)} "
            "not sent. Rerun with --resume once it is done."
        )
    no_id = stops.get(Code.ID_NOT_FOUND_YET.value, {})
    if no_id:
        lines.append(
            f"ids not found yet: {_rows(no_id)} have a conversation, but HighLevel's search "
            "index did not show its id within --lookup-wait. A retry in a few minutes looks "
            "them up (searches only, never a create)."
        )
    # A Python call has no command line to paste: its next step is the caller's to say.
    next_step = (
        ""
        if argv is None
        else _next(results, argv, stops, problem_rows, interrupted, dry_run, shard)
    )
    return Advice(lines, next_step)


def _next(
    results: str,
    argv: Sequence[str],
    stops: dict[str, dict[str, int]],
    problem_rows: int,
    interrupted: bool,
    dry_run: bool,
    shard: str | None,
) -> str:
    """The one command to run next, which works when pasted as printed
    (``tests/e2e/test_next_steps.py`` pastes each). A task of an array job is resumed, never
    retried: ``retry`` of its part would read the part as a whole input, whose rows are not
    those of the part's input (and the part's output is the task's, named by ``--shard``).
    """
    if interrupted:
        return f"next: continue with: {resume_command(argv, shard)}"
    if dry_run:  # its output exists now: --resume sends the planned rows into it
        return f"next: send the planned rows with: {resume_command(argv, shard)}"
    again = resume_command(argv, shard) if shard else retry_command(argv, results)
    waiting = set(stops) - {Code.DAILY_QUOTA_EXHAUSTED.value, Code.ID_NOT_FOUND_YET.value}
    if waiting:
        return f"next: once fixed: {again}"
    if Code.DAILY_QUOTA_EXHAUSTED.value in stops:
        return f"next: once the quota turns: {resume_command(argv, shard)}"
    if stops:  # only ids the search index did not show yet
        return f"next: in a few minutes, to find the missing ids: {again}"
    if not problem_rows:
        return f"next: {program()} report {results}"
    return (
        f"next: {plural(problem_rows, 'row')} need{'s' if problem_rows == 1 else ''} "
        f"attention: {program()} report {results} "
        f"--rows failed,invalid,skipped --format csv -o {problems_file(results)}"
    )


def problems_file(results: str) -> str:
    """Where the problem rows' CSV goes: beside a local results file; in the current
    folder for one in object storage (``pipeline report -o`` writes a local file)."""
    stem, folder = _stem(results)
    return f"{stem}-problems.csv" if is_uri(results) else f"{folder}{stem}-problems.csv"


def program() -> str:
    """How to call this program from the shell that called it, so a printed command works
    when pasted: ``pipeline`` when that is on the PATH, else the console script beside this
    interpreter (``.venv/bin/pipeline`` after ``make``), else ``python -m pipeline``."""
    script = Path(sys.executable).with_name("pipeline")
    found = shutil.which("pipeline")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "pipeline"
    if script.exists():
        try:
            return str(script.absolute().relative_to(Path.cwd()))
        except ValueError:
            return str(script.absolute())
    return shlex.join([sys.executable, "-m", "pipeline"])


def _stem(results: str) -> tuple[str, str]:
    folder, _, name = results.rpartition("/")
    return name.removesuffix(".parquet"), f"{folder}/" if folder else ""


_ONE_SHOT = frozenset({"--resume", "--overwrite", "--dry-run"})


def _options(argv: Sequence[str]) -> tuple[str, list[str], str | None]:
    """(command, options without the positional input, -o and one-shot flags, the input).

    The input is the first argument after the command that is not an option or an
    option's value; every option of run/retry but the flags takes one value.
    """
    command, rest = (argv[0], list(argv[1:])) if argv else ("run", [])
    kept: list[str] = []
    source: str | None = None
    index = 0
    while index < len(rest):
        arg = rest[index]
        index += 1
        if arg in ("-o", "--output"):
            index += 1
        elif arg.startswith(("--output=", "-o")) or arg in _ONE_SHOT:
            continue  # -oFILE, --output=FILE, and the flags of this one run
        elif arg.startswith("-"):
            kept.append(arg)
            if "=" not in arg and not _is_flag(arg) and index < len(rest):
                kept.append(rest[index])
                index += 1
        elif source is None:
            source = arg
        else:
            kept.append(arg)
    return command, kept, source


def _is_flag(option: str) -> bool:
    from pipeline.app.config import RunConfig

    flags = {name for name, field in RunConfig.model_fields.items() if field.annotation is bool}
    return option == "--debug" or option.removeprefix("--").replace("-", "_") in flags


def resume_command(argv: Sequence[str], shard: str | None = None) -> str:
    """The same command with ``--resume`` (and without ``--overwrite``, which would start
    over, or ``--dry-run``, which would send nothing): it keeps every settled row and sends
    the rest, into the same results. A task told its part by the engine's environment
    (``JOB_COMPLETION_INDEX``...) names it (``--shard K/N``, in place of ``--shard-count``),
    so that the command sends the same part from any shell."""
    kept = [arg for arg in argv if arg not in _ONE_SHOT]
    if shard is not None and not any(a == "--shard" or a.startswith("--shard=") for a in kept):
        kept = [*_without_option(kept, "--shard-count"), "--shard", shard]
    return shlex.join([*shlex.split(program()), *kept, "--resume"])


def interrupted_again(argv: Sequence[str], shard: str | None) -> str:
    """The line a second Ctrl-C prints as it leaves at once, writing no results: the
    journal keeps every settled row, and ``--resume`` continues from it."""
    return (
        "pipeline: interrupted again: stopped at once, without writing the results; the "
        f"journal keeps every settled row: continue with: {resume_command(argv, shard)}"
    )


def _without_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without the option ``name`` and its value (``NAME V`` or ``NAME=V``)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def retry_command(argv: Sequence[str], results: str) -> str:
    """``pipeline retry RESULTS -o STEM-retry.parquet`` with the run's other options (the
    base URL, the tokens' sources, the limits), so it goes where the run went."""
    _, kept, _ = _options(argv)
    stem, folder = _stem(results)
    retry = [*shlex.split(program()), "retry", results, "-o", f"{folder}{stem}-retry.parquet"]
    return shlex.join([*retry, *kept])
