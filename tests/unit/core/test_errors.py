"""The one-line helpers every message on the client side goes through."""

from __future__ import annotations

import pytest

from pipeline.core.errors import UsageError, first_line, one_line, plural


def test_first_line_of_a_one_line_message() -> None:
    assert first_line(ValueError("bad file")) == "bad file"


def test_first_line_keeps_only_the_first_line() -> None:
    exc = OSError("cannot open foo.parquet\n\nHint: is it a Parquet file?\n  (details)")
    assert first_line(exc) == "cannot open foo.parquet"


def test_first_line_skips_leading_blank_lines_and_white_space() -> None:
    assert first_line(RuntimeError("\n \n  the cause\nmore")) == "the cause"


@pytest.mark.parametrize("message", ["", "   ", "\n\n", " \t\r\n "])
def test_first_line_of_an_empty_message_is_the_type_name(message: str) -> None:
    assert first_line(UsageError(message)) == "UsageError"


def test_first_line_of_an_exception_with_no_arguments() -> None:
    assert first_line(TimeoutError()) == "TimeoutError"


def test_one_line_joins_lines_and_folds_white_space() -> None:
    assert one_line("a\nb\r\n  c\t\td ") == "a b c d"


@pytest.mark.parametrize("text", ["", " ", "\n\t\r\n"])
def test_one_line_of_nothing_is_empty(text: str) -> None:
    assert one_line(text) == ""


def test_one_line_leaves_a_line_alone() -> None:
    assert one_line("pipeline: error: no contactId column") == (
        "pipeline: error: no contactId column"
    )


def test_a_count_of_one_is_singular_and_grouped_counts_read_as_in_a_chat() -> None:
    assert [plural(n, "row") for n in (0, 1, 2, 1000)] == ["0 rows", "1 row", "2 rows", "1000 rows"]
    assert plural(1234, "location", grouped=True) == "1,234 locations"
    assert (
        plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
    )
