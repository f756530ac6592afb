"""The per-request shortcuts (issue 23) make what they replace, byte for byte, field for field."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.core.outcomes import OUTCOME_COLUMNS, Code, RowOutcome, Status, quick_init
from pipeline.highlevel.answers import Answer, RateHeaders
from pipeline.highlevel.client import _int_header, classify
from pipeline.highlevel.transport import RawAnswer
from pipeline.send.retrying import Retry, Settle
from pipeline.state.journal import _record

HOT = (RowOutcome, Answer, RateHeaders, RawAnswer, Retry, Settle)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    """What quick_init replaces: the dataclass's own __init__."""

    a: int
    b: str | None
    c: float = 1.5
    d: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Quick:
    """The same, with quick_init's."""

    a: int
    b: str | None
    c: float = 1.5
    d: tuple[int, ...] = ()


def test_quick_init_makes_what_the_dataclass_makes() -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, "x"), {}),
        ((1,), {"b": None, "d": (2,)}),
        ((), {"a": 3, "b": "y"}),
    ]
    for args, kwargs in cases:
        plain, quick = _Plain(*args, **kwargs), _Quick(*args, **kwargs)
        assert dataclasses.astuple(plain) == dataclasses.astuple(quick)
    assert list(inspect.signature(_Quick).parameters) == ["a", "b", "c", "d"]
    assert [p.default for p in inspect.signature(_Quick).parameters.values()][2:] == [1.5, ()]
    with pytest.raises(TypeError):
        _Quick(1)  # type: ignore[call-arg]  # b is required
    with pytest.raises(TypeError):
        _Quick(1, "x", e=2)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", HOT)
def test_hot_dataclasses_stay_frozen_hashable_and_alike(cls: type) -> None:
    fields = dataclasses.fields(cls)
    signature = inspect.signature(cls)
    assert list(signature.parameters) == [f.name for f in fields]
    for field, parameter in zip(fields, signature.parameters.values(), strict=True):
        expected = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert parameter.default == expected
    values = {f.name: f"v-{f.name}" for f in fields}
    one, two = cls(**values), cls(*values.values())
    assert one == two and hash(one) == hash(two)
    assert dataclasses.asdict(one) == values
    assert repr(one).startswith(f"{cls.__name__}(")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(one, fields[0].name, "changed")
    assert dataclasses.replace(one, **{fields[0].name: "other"}) != one


def test_quick_init_refuses_what_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Factory, NoSlots, Post):
        with pytest.raises(TypeError):
            quick_init(cls)


OUTCOMES = [
    RowOutcome(
        0, Status.CREATED, "conv-1", None, 201, None, 1, "trace", datetime(2026, 1, 2, tzinfo=UTC)
    ),
    RowOutcome(
        123456789,
        Status.FAILED,
        None,
        Code.RATE_LIMITED,
        429,
        'too many "requests"\n\u00e9',
        5,
        None,
        datetime(2026, 12, 6, 5, 9, 15, 62123, tzinfo=UTC),
    ),
    RowOutcome(7, Status.SKIPPED, None, Code.INTERRUPTED, None, "stopped", 0),
]


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_journal_record_is_the_outcome_as_json(outcome: RowOutcome) -> None:
    assert tuple(_record(outcome)) == OUTCOME_COLUMNS
    written = orjson.dumps(_record(outcome), option=orjson.OPT_APPEND_NEWLINE)
    assert written == orjson.dumps(outcome) + b"\n"


@pytest.mark.parametrize(
    "value",
    ["0", "42", "999999999999999", "1000000000000000", "12345678901234567890", "1e3", "12.7",
     "-5", " 7 ", "4_2", "\u0661\u0662", "nan", "abc", "", "\u00b2"],
)  # fmt: skip
def test_int_header_reads_as_before(value: str) -> None:
    try:
        before: int | None = int(float(value))
    except ValueError:
        before = None
    assert _int_header({"X": value}, "X") == before


def test_classify_success_unchanged_by_the_shortcuts() -> None:
    headers = {
        "X-RateLimit-Remaining": "99",
        "X-RateLimit-Max": "100",
        "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Daily-Remaining": "199999",
        "X-RateLimit-Limit-Daily": "200000",
    }
    body = orjson.dumps({"conversation": {"id": "c-1"}, "traceId": "t-1"})
    assert classify(201, headers, body, "contact") == Answer(
        Status.CREATED,
        None,
        "c-1",
        201,
        None,
        RateHeaders(
            remaining=99,
            max_requests=100,
            interval_ms=10000,
            daily_remaining=199999,
            daily_limit=200000,
        ),
        "t-1",
    )
