"""The vocabulary of results: row statuses, error codes, and the results' columns.

These strings are the contract with users' scripts (the README's "Results"): an analyst
reconciles a run by grouping on them, so they never change spelling. Add new codes freely;
never rename one.

Also ``quick_init``, which makes the frozen dataclasses built once or more per request
(``RowOutcome`` here, the client's ``Answer``, ...) about twice as cheap to build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field straight
    through its slot: the same parameters, defaults and resulting object, in about half the
    time (1.5-2.5x faster, measured on this project's machine).

    A frozen dataclass's own ``__init__`` stores every field with ``object.__setattr__``
    (its ``__setattr__`` refuses), a generic lookup per field: an ``Answer`` or a
    ``RowOutcome`` cost 2 µs to make, and the sending loop makes several per request.
    Only for classes whose fields are all plain ``__init__`` parameters, positional or with
    a plain default (no ``default_factory``, ``kw_only``, ``InitVar`` or ``__post_init__``);
    anything else is refused here rather than built wrong."""
    if not (dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__}: quick_init needs a slotted dataclass")
    if hasattr(cls, "__post_init__") or len(dataclasses.fields(cls)) != len(
        cls.__dataclass_fields__
    ):
        raise TypeError(f"{cls.__name__}: quick_init takes no __post_init__, InitVar, ClassVar")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    stores: list[str] = []
    for field in dataclasses.fields(cls):
        name = field.name
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name}: quick_init takes plain fields only")
        namespace[f"_set_{name}"] = getattr(cls, name).__set__  # the slot's own store
        if field.default is dataclasses.MISSING:
            params.append(name)
        else:
            namespace[f"_default_{name}"] = field.default
            params.append(f"{name}=_default_{name}")
        stores.append(f"    _set_{name}(self, {name})\n")
    body = "".join(stores) or "    pass\n"
    source = f"def __init__(self, {', '.join(params)}):\n{body}"
    exec(source, namespace)  # noqa: S102 - built from the field names alone, as dataclasses does
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class Status(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    FAILED = "failed"
    SKIPPED = "skipped"


class Code(StrEnum):
    # validation (status invalid)
    MISSING_CONTACT_ID = "missing_contact_id"
    MISSING_LOCATION_ID = "missing_location_id"
    INVALID_CONTACT_ID = "invalid_contact_id"
    INVALID_LOCATION_ID = "invalid_location_id"
    # planning (status duplicate)
    DUPLICATE_ROW = "duplicate_row"
    # API answers
    CONVERSATION_EXISTS = "conversation_exists"
    # "exists", and the search index has not shown its id yet (status exists): a rerun
    # (--resume, pipeline retry, --known) looks it up again, never creates
    ID_NOT_FOUND_YET = "id_not_found_yet"
    # earlier runs' results (--known; status exists): not sent at all
    KNOWN_FROM_EARLIER_RUN = "known_from_earlier_run"
    UNAUTHORIZED = "unauthorized"
    MISSING_SCOPE = "missing_scope"  # the token lacks a scope the endpoint needs
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    UNPROCESSABLE = "unprocessable"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    INVALID_RESPONSE = "invalid_response"
    INTERNAL_ERROR = "internal_error"
    # transport
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    # reasons of the run (status skipped)
    DAILY_QUOTA_EXHAUSTED = "daily_quota_exhausted"
    NO_TOKEN = "no_token"  # noqa: S105 - a code, not a secret
    NOT_INSTALLED = "not_installed"  # the agency's app is not installed at the location
    UNREACHABLE = "unreachable"  # no answer from the API: never reached, or gone silent
    STALLED = "stalled"  # the run made no progress for a bound; its watchdog stopped it
    CREDENTIALS_LOCKED = "credentials_locked"  # another run held the --oauth-file's lock
    INTERRUPTED = "interrupted"
    DRY_RUN = "dry_run"


# Why a row was not sent, for ``error_message`` of ``skipped`` rows.
SKIP_MESSAGES: dict[Code, str] = {
    Code.DAILY_QUOTA_EXHAUSTED: "the location's daily request quota is spent; rerun later",
    Code.FORBIDDEN: "the token was refused for this location; not sent",
    Code.UNAUTHORIZED: "the token was rejected; the run stopped before sending this row",
    Code.INTERRUPTED: "the run was interrupted before this row was done",
    Code.DRY_RUN: "dry run: not sent",
    Code.NO_TOKEN: "no token for this location in the tokens file",
    Code.NOT_INSTALLED: "the app is not installed at this location; no token can be minted",
    Code.UNREACHABLE: "the API could not be reached or stopped answering; the run stopped "
    "before sending this row",
    Code.STALLED: "the run made no progress and its watchdog stopped it before sending this row",
    Code.CREDENTIALS_LOCKED: "another run held the --oauth-file's lock too long; the run "
    "stopped before sending this row (try again later)",
}

# Answers worth another attempt: the same request may well succeed a moment later.
RETRYABLE: frozenset[Code] = frozenset(
    {Code.RATE_LIMITED, Code.SERVER_ERROR, Code.TIMEOUT, Code.NETWORK_ERROR, Code.INVALID_RESPONSE}
)


# Failures worth sending again in a later run (``--resume``, ``pipeline retry``): the
# transient ones, and those that a fixed token or a fixed bug turns into successes.
RESENDABLE: frozenset[Code] = RETRYABLE | {
    Code.UNAUTHORIZED,
    Code.FORBIDDEN,
    Code.MISSING_SCOPE,
    Code.INTERNAL_ERROR,
}


# -- the outcome schema: the one definition of the results' columns -------------------------
#
# Everything else is derived from ``RESULT_SPEC``: the column names the reader reserves
# (``RESULT_COLUMNS``), the polars and Parquet types of the results and of the journal
# (``schema.RESULT_SCHEMA``, ``schema.OUTCOME_SCHEMA``), the journal record (a ``RowOutcome``
# as JSON, whose fields a test holds to ``OUTCOME_COLUMNS``) and the columns ``assemble``
# writes. A new column is added here, last, and nowhere else. Types are named, not imported:
# this vocabulary is shared with the sending side, which has no use for polars.

ColumnType = Literal["Int64", "Int32", "String", "Datetime"]  # Datetime: µs, UTC


@dataclass(frozen=True, slots=True)
class ResultColumn:
    """One column of the results file."""

    name: str
    type: ColumnType  # its type in the results and the journal, by polars' name
    outcome: bool  # recorded by sending (a field of RowOutcome); otherwise from the input


RESULT_SPEC: tuple[ResultColumn, ...] = (
    ResultColumn("row_index", "Int64", outcome=True),
    ResultColumn("contact_id", "String", outcome=False),
    ResultColumn("location_id", "String", outcome=False),
    ResultColumn("status", "String", outcome=True),
    ResultColumn("conversation_id", "String", outcome=True),
    ResultColumn("error_code", "String", outcome=True),
    ResultColumn("http_status", "Int32", outcome=True),
    ResultColumn("error_message", "String", outcome=True),
    ResultColumn("attempts", "Int32", outcome=True),
    ResultColumn("trace_id", "String", outcome=True),
    ResultColumn("finished_at", "Datetime", outcome=True),
)

# The results file's columns, in order (shared by the reader, which must not let a kept
# input column take one of these names, and the writer).
RESULT_COLUMNS: tuple[str, ...] = tuple(column.name for column in RESULT_SPEC)

# What sending adds to a row, in order: the fields of RowOutcome, the keys of a journal record.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(column.name for column in RESULT_SPEC if column.outcome)


@quick_init
@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What finally happened to one sent row: one record of the journal, then one line of the
    results. Its fields are ``OUTCOME_COLUMNS`` in order, so that the record is this object
    as JSON (``journal.JournalWriter.add``)."""

    row_index: int
    status: Status
    conversation_id: str | None
    error_code: Code | None
    http_status: int | None
    error_message: str | None
    attempts: int
    trace_id: str | None = None
    finished_at: datetime | None = None  # when the row settled (UTC); None if never sent
