"""A location's daily quota (``send/quota.py``): what may still start, and the figure shown."""

from __future__ import annotations

from pipeline.send.quota import DailyAllowance, is_spent


def test_rows_that_may_start_leave_the_reserve_and_the_requests_on_their_way() -> None:
    allowance = DailyAllowance(reserve=20)
    assert allowance.left is None and not allowance.spent  # no answer said yet: no limit
    allowance.observe(100, in_flight=10, sharers=1, sent_at=1.0)
    assert allowance.left == 70
    allowance.observe(100, in_flight=10, sharers=2, sent_at=1.1)  # two runs share it
    assert allowance.left == 35
    for _ in range(35):
        allowance.start_one()
    assert allowance.spent


def test_the_figure_shown_is_the_latest_sent_requests_whatever_order_answers_arrive() -> None:
    """Under varying latency the answer to an earlier request can arrive last, saying one or
    two more than the server's count: the figure stays the later request's."""
    allowance = DailyAllowance()
    allowance.observe(498, in_flight=0, sharers=1, sent_at=2.0)
    allowance.observe(499, in_flight=0, sharers=1, sent_at=1.0)  # sent first, answered last
    assert allowance.remaining == 498
    allowance.observe(497, in_flight=0, sharers=1, sent_at=3.0)
    assert allowance.remaining == 497


def test_the_figure_rises_when_the_apis_day_turns_mid_run() -> None:
    allowance = DailyAllowance()
    allowance.observe(3, in_flight=0, sharers=1, sent_at=10.0)
    allowance.observe(199_999, in_flight=0, sharers=1, sent_at=11.0)  # a new day's quota
    assert allowance.remaining == 199_999 and not allowance.spent


def test_spent_is_what_any_answer_says() -> None:
    assert is_spent(0) and not is_spent(1) and not is_spent(None)
