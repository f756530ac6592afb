"""Errors that end a run before anything is sent.

A ``UsageError`` is what a user can fix (a bad file, a bad option, a missing token): the CLI
prints its message as one line on stderr and exits 2, never with a traceback (``--debug``
shows one). Anything else escaping is a bug and is reported as such.
"""

from __future__ import annotations


class UsageError(Exception):
    """A problem with the command line, the configuration or the input file. Exit code 2."""

    exit_code = 2
