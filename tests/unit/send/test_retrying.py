"""The decision after an answer, without a server or a clock."""

from __future__ import annotations

import random

import pytest

from pipeline.core.outcomes import Code, Status
from pipeline.highlevel.answers import Answer, RateHeaders
from pipeline.send.backoff import Backoff
from pipeline.send.retrying import FindExisting, Retry, RetryPolicy, Settle, skipped

POLICY = RetryPolicy(
    max_attempts=3, max_retry_wait=10.0, backoff=Backoff(base=1.0, rng=random.Random(1))
)


def failed(code: Code, status: int | None = None, **rate: int | float) -> Answer:
    return Answer(Status.FAILED, code, http_status=status, rate=RateHeaders(**rate), trace_id="t-1")


def test_created_settles() -> None:
    created = Answer(Status.CREATED, None, "c1", 201)
    assert POLICY.after(created, attempts=1, waited_s=0) == Settle(created)


def test_already_exists_is_looked_up() -> None:
    exists = Answer(Status.EXISTS, Code.CONVERSATION_EXISTS, None, 400)
    assert POLICY.after(exists, attempts=1, waited_s=0) == FindExisting()


@pytest.mark.parametrize(
    "code",
    [Code.BAD_REQUEST, Code.UNAUTHORIZED, Code.FORBIDDEN, Code.UNPROCESSABLE, Code.MISSING_SCOPE],
)
def test_final_answers_settle_at_once(code: Code) -> None:
    answer = failed(code, 400)
    assert POLICY.after(answer, attempts=1, waited_s=0) == Settle(answer)


@pytest.mark.parametrize(
    "code", [Code.SERVER_ERROR, Code.TIMEOUT, Code.NETWORK_ERROR, Code.INVALID_RESPONSE]
)
def test_transient_answers_are_retried_after_a_jittered_wait(code: Code) -> None:
    decision = POLICY.after(failed(code), attempts=2, waited_s=0)
    assert isinstance(decision, Retry) and not decision.pause_location
    assert 0 <= decision.delay_s <= 2.0  # full jitter under base * 2^(attempt-1)


def test_the_last_attempt_settles_with_its_answer() -> None:
    answer = failed(Code.SERVER_ERROR, 500)
    assert POLICY.after(answer, attempts=3, waited_s=0) == Settle(answer)


def test_a_429_pauses_the_location_for_retry_after() -> None:
    decision = POLICY.after(
        failed(Code.RATE_LIMITED, 429, retry_after_s=4.0), attempts=1, waited_s=0
    )
    assert decision == Retry(4.0, pause_location=True)


def test_a_429_that_says_the_day_is_spent_is_skipped() -> None:
    answer = failed(Code.RATE_LIMITED, 429, daily_remaining=0)
    decision = POLICY.after(answer, attempts=1, waited_s=0)
    assert isinstance(decision, Settle)
    assert (decision.answer.status, decision.answer.code) == (
        Status.SKIPPED,
        Code.DAILY_QUOTA_EXHAUSTED,
    )
    assert (decision.answer.http_status, decision.answer.trace_id) == (429, "t-1")


def test_a_stopped_run_skips_instead_of_retrying() -> None:
    decision = POLICY.after(
        failed(Code.SERVER_ERROR, 500), attempts=1, waited_s=0, stopped=Code.INTERRUPTED
    )
    assert isinstance(decision, Settle) and decision.answer.code is Code.INTERRUPTED
    assert decision.answer.status is Status.SKIPPED and decision.answer.http_status == 500


def test_the_wait_budget_ends_retries() -> None:
    answer = failed(Code.RATE_LIMITED, 429, retry_after_s=4.0)
    assert POLICY.after(answer, attempts=1, waited_s=7.0) == Settle(answer)  # 7 + 4 > 10


def test_skipped_keeps_the_last_answers_status_and_trace() -> None:
    row = skipped(Code.UNREACHABLE)
    assert (row.status, row.code, row.http_status, row.trace_id) == (
        Status.SKIPPED,
        Code.UNREACHABLE,
        None,
        None,
    )
    assert row.message and "reached" in row.message


def test_429s_are_retried_for_as_long_as_the_row_may_wait_not_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_wait=10.0, backoff=Backoff(base=0.1))
    answer = failed(Code.RATE_LIMITED, 429, retry_after_s=1.0)
    assert isinstance(policy.after(answer, attempts=7, waited_s=2.0), Retry)
    assert isinstance(policy.after(answer, attempts=7, waited_s=9.5), Settle)  # out of time
    server = failed(Code.SERVER_ERROR, 503)
    assert isinstance(policy.after(server, attempts=3, waited_s=0.0), Settle)
