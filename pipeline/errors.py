"""Errors that end a run before anything is sent, and how a message is told in one line.

A ``UsageError`` is what a user can fix (a bad file, a bad option, a missing token): the CLI
prints its message as one line on stderr and exits 2, never with a traceback (``--debug``
shows one). Anything else escaping is a bug and is reported as such.

Messages from elsewhere (a library's exception, a server's answer) are often several lines
long; ``first_line`` and ``one_line`` make them fit the one line a message gets.
"""

from __future__ import annotations


class UsageError(Exception):
    """A problem with the command line, the configuration or the input file. Exit code 2."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a library's error often goes on with details or a
    hint); its type's name when the message is empty or only white space."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` on one line: every run of white space (line breaks included) as one space,
    none at either end."""
    return " ".join(text.split())
