"""What answers say about tokens, locations and the run: fed one answer at a time."""

from __future__ import annotations

from pipeline.core.outcomes import Code, Status
from pipeline.highlevel.answers import Answer, RateHeaders
from pipeline.send.guards import MAX_CONNECT_FAILURES, Guards, Verdict

TOKENS = {"A1": 0, "A2": 0, "B1": 1}


def guards() -> Guards:
    made = Guards(TOKENS.__getitem__)
    for location in TOKENS:
        made.add(location)
    return made


def answer(status: int | None, code: Code | None = None, **rate: int) -> Answer:
    outcome = Status.CREATED if status is not None and status < 300 else Status.FAILED
    return Answer(
        outcome, code, "c" if outcome is Status.CREATED else None, status, rate=RateHeaders(**rate)
    )


def test_a_decisive_answer_accepts_the_token_and_decides_the_location() -> None:
    g = guards()
    assert g.observe("A1", answer(201)) == Verdict(decided=("A1",), token_decided=True)
    assert g.token_accepted("A2") and not g.decided("A2")  # A2 still sends its first alone
    assert g.observe("A2", answer(201)) == Verdict(decided=("A2",))
    assert g.observe("A2", answer(201)) == Verdict()  # nothing new


def test_a_5xx_or_no_answer_decides_nothing() -> None:
    g = guards()
    assert g.observe("A1", answer(500, Code.SERVER_ERROR)) == Verdict()
    assert g.observe("A1", answer(None, Code.TIMEOUT)) == Verdict()
    assert not g.token_accepted("A1") and not g.decided("A1")


def test_a_401_stops_every_location_of_its_token_only() -> None:
    g = guards()
    verdict = g.observe("A1", answer(401, Code.UNAUTHORIZED))
    assert verdict == Verdict(decided=("A1", "A2"), token_decided=True)
    assert g.stopped_by("A1") is g.stopped_by("A2") is Code.UNAUTHORIZED
    assert g.stopped_by("B1") is None


def test_the_run_stops_when_every_token_is_rejected() -> None:
    g = guards()
    g.observe("A1", answer(401, Code.UNAUTHORIZED))
    assert g.observe("B1", answer(401, Code.UNAUTHORIZED)).stop_run is Code.UNAUTHORIZED


def test_a_missing_scope_is_not_a_rejected_token() -> None:
    g = guards()
    g.observe("A1", answer(201))
    verdict = g.observe("A1", answer(401, Code.MISSING_SCOPE))
    assert verdict.stop_run is None and g.stopped_by("A1") is None
    assert not g.can_search("A1") and not g.can_search("A2") and g.can_search("B1")


def test_whether_a_token_may_search_is_known_after_one_decisive_search() -> None:
    g = guards()
    assert not g.search_known("A1")
    g.searched("A1", answer(500, Code.SERVER_ERROR))
    assert not g.search_known("A2")  # a 5xx says nothing
    g.searched("A2", answer(200))
    assert g.search_known("A1") and g.can_search("A1") and not g.search_known("B1")


def test_a_403_stops_its_location() -> None:
    g = guards()
    assert g.observe("A1", answer(403, Code.FORBIDDEN)) == Verdict(
        decided=("A1",), token_decided=True
    )
    assert g.stopped_by("A1") is Code.FORBIDDEN and g.stopped_by("A2") is None
    assert g.token_accepted("A2")  # the token itself was fine


def test_a_spent_daily_quota_stops_its_location() -> None:
    g = guards()
    g.observe("A1", answer(201, daily_remaining=0))
    assert g.stopped_by("A1") is Code.DAILY_QUOTA_EXHAUSTED and g.stopped_by("A2") is None


def no_connection() -> Answer:
    return Answer(Status.FAILED, Code.NETWORK_ERROR, message="refused", connect_failed=True)


def test_no_connection_three_times_stops_the_run() -> None:
    g = guards()
    for _ in range(MAX_CONNECT_FAILURES - 1):
        assert g.observe("A1", no_connection()).stop_run is None
    verdict = g.observe("B1", no_connection())
    assert verdict.stop_run is Code.UNREACHABLE and "refused" in (verdict.detail or "")


def test_once_the_api_answered_lost_connections_are_only_flaky() -> None:
    g = guards()
    g.observe("A1", answer(201))
    for _ in range(MAX_CONNECT_FAILURES * 2):
        assert g.observe("A1", no_connection()).stop_run is None
