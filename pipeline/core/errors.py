"""Errors that end a run before anything is sent, and how a message is told in one line.

A ``UsageError`` is what a user can fix (a bad file, a bad option, a missing token): the CLI
prints its message as one line on stderr and exits 2, never with a traceback (``--debug``
shows one). Anything else escaping is a bug and is reported as such. A subclass may say
another exit code: ``CheckpointTakenOver`` (75) ends a run while it sends.

Messages from elsewhere (a library's exception, a server's answer) are often several lines
long; ``first_line`` and ``one_line`` make them fit the one line a message gets, and
``plural`` counts in them ("1 row", "2 rows").
"""

from __future__ import annotations

# Every exit code of the program, in one place (README's "Exit codes").
EXIT_OK = 0
EXIT_ROWS_NOT_DONE = 1  # the run finished; some rows match --fail-on
EXIT_USAGE = 2  # nothing was sent: a usage, configuration or input-file error
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, or the machine refused (disk full, permissions)
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the output or the credentials; try later
EXIT_SIGINT = 130  # 128 + SIGINT (SIGTERM: 143)


class UsageError(Exception):
    """A problem with the command line, the configuration or the input file. Exit code 2."""

    exit_code = EXIT_USAGE


class OptionNotTaken(UsageError, TypeError):
    """A keyword argument the Python call does not take: unknown, or an option of ``pipeline
    run`` that only the command line carries out so far. Refused by name rather than ignored,
    since a caller who passes ``notify=[...]`` expects to be notified. A ``TypeError`` as
    well, as Python's own refusal of an unexpected keyword argument is."""


class CheckpointTakenOver(UsageError):
    """A newer attempt of this task took the output's checkpoint over (``checkpoints``):
    this attempt stopped sending and wrote no results, leaving the rows it did not finish
    to the newer one. Exit 75 (EX_TEMPFAIL), as for an output another run holds
    (``EXIT_LOCKED``): another attempt is writing this output, and a scheduler should not
    count this one as a failed task."""

    exit_code = EXIT_LOCKED


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a library's error often goes on with details or a
    hint); its type's name when the message is empty or only white space."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def plural(count: int, noun: str, many: str | None = None, *, grouped: bool = False) -> str:
    """``count`` and ``noun``, plural unless the count is one: ``1 row``, ``0 rows``,
    ``2 locations``; ``many`` is a plural that is not ``noun`` + s (``"entries"``);
    ``grouped``: thousands apart, as a message read in a chat shows them (``1,000 rows``)."""
    number = f"{count:,}" if grouped else str(count)
    return f"{number} {noun if count == 1 else many or noun + 's'}"


def one_line(text: str) -> str:
    """``text`` on one line: every run of white space (line breaks included) as one space,
    none at either end."""
    return " ".join(text.split())
