"""What the API's answers say about a token, a location and the run: the guards of sending.

The sender asks these rules, one answer at a time, whether to keep sending. They are state,
not mechanism: no event loop, no clock, no I/O, so every rule is a plain unit test
(``tests/unit/send/test_guards.py``). The sender turns a ``Verdict`` into wake-ups and a stop.

The rules, in the order a run meets them:

- **A token's first decisive answer decides it.** Decisive means an HTTP answer below 500:
  the API itself looked at the request (a 5xx or no answer says nothing about the token). A
  401 rejects the token: every location it serves stops (``unauthorized``), and the run
  stops when no location is left. Any other decisive answer accepts it. A later 401 (a
  token revoked mid-run) rejects it the same way. A 401 that names a missing scope
  (``missing_scope``) is not a rejection.
- **A location's first decisive answer decides it**: a 403 stops it (``forbidden``), as does
  a 403 later on. The sender holds the location's burst until then.
- **A spent daily quota** (``X-RateLimit-Daily-Remaining: 0`` in any answer, as
  ``quota.spent`` reads it) stops the location (``daily_quota_exhausted``).
- **A search refused for a missing scope** means the token cannot look up existing
  conversations: no more searches with it.
- **No connection at all**, ``MAX_CONNECT_FAILURES`` times before the API has answered
  anything, stops the run (``unreachable``): a wrong ``--base-url`` costs seconds
  (``Reachability``, the rule ``pipeline check`` follows too).
- **The OAuth credentials file locked** by another run past its bound stops the run
  (``credentials_locked``): a token is a matter of the run, not of a row or a location.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from pipeline.core import constants
from pipeline.core.outcomes import RETRYABLE, Code
from pipeline.highlevel.answers import Answer
from pipeline.send import quota

log = structlog.get_logger("pipeline.send.guards")

# Connection failures, before the API has answered anything, that stop the run. With the
# backoff's first waits (up to 0.5 s, then 1 s) they take a few seconds.
MAX_CONNECT_FAILURES = 3


@dataclass(slots=True)
class Reachability:
    """Whether the API can be reached at all: ``MAX_CONNECT_FAILURES`` answers with no
    connection made, before any HTTP answer, say it cannot. A run's guards and
    ``pipeline check`` both ask this rule."""

    answered: bool = False  # the API has answered at least once: it is reachable
    connect_failures: int = 0

    def lost(self, answer: Answer) -> bool:
        """Take one answer in: True when it makes the API unreachable."""
        if answer.http_status is not None:
            self.answered = True
            return False
        if not answer.connect_failed or self.answered:
            return False
        self.connect_failures += 1
        return self.connect_failures >= MAX_CONNECT_FAILURES


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one answer changed, for the sender to act on."""

    decided: tuple[str, ...] = ()  # locations whose first request is now decided
    token_decided: bool = False  # the answer's token is now accepted or rejected
    stop_run: Code | None = None  # the run sends nothing more, for this reason
    detail: str | None = None  # the stop's reason in a line


NOTHING = Verdict()


@dataclass(slots=True)
class _Token:
    accepted: bool = False
    rejected: bool = False
    can_search: bool = True
    search_known: bool = False  # a search with it has had a decisive answer
    locations: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Location:
    token: _Token
    stopped_by: Code | None = None
    decided: bool = False


class Guards:
    """The state of every token and location of a run, fed one answer at a time."""

    def __init__(self, token_key: Callable[[str], int]) -> None:
        """``token_key``: an identity of the token a location uses (never the token)."""
        self._token_key = token_key
        self._tokens: dict[int, _Token] = {}
        self._locations: dict[str, _Location] = {}
        self._reach = Reachability()
        self._credentials_locked_told = False

    def add(self, location_id: str) -> None:
        """Know a location before its first answer, so a rejected token stops it too."""
        if location_id not in self._locations:
            token = self._tokens.setdefault(self._token_key(location_id), _Token())
            token.locations.append(location_id)
            self._locations[location_id] = _Location(token)

    # -- questions ----------------------------------------------------------------------

    def stopped_by(self, location_id: str) -> Code | None:
        """Why nothing more is sent to the location, or None while it may be."""
        return self._locations[location_id].stopped_by

    def decided(self, location_id: str) -> bool:
        """The location has had its decisive first answer (or was stopped without one)."""
        return self._locations[location_id].decided

    def token_accepted(self, location_id: str) -> bool:
        return self._locations[location_id].token.accepted

    def can_search(self, location_id: str) -> bool:
        return self._locations[location_id].token.can_search

    def search_known(self, location_id: str) -> bool:
        """Whether the location's token may search is known (until then, one at a time)."""
        return self._locations[location_id].token.search_known

    def searched(self, location_id: str, answer: Answer) -> None:
        """A search's answer (already ``observe``d): a decisive one settles whether the
        token may search."""
        if answer.decisive:
            self._locations[location_id].token.search_known = True

    # -- the rules ----------------------------------------------------------------------

    def observe(self, location_id: str, answer: Answer) -> Verdict:
        """Take one answer (a create's or a search's) for the location into account."""
        location = self._locations[location_id]
        if answer.code is Code.CREDENTIALS_LOCKED:
            return self._credentials_locked(answer)
        if not answer.sent and answer.code is not None and answer.code not in RETRYABLE:
            return self._no_token(location_id, answer.code)
        if self._reach.lost(answer):
            log.error("API unreachable; stopping", cause=answer.message)
            detail = f"cannot reach the API: {answer.message}"
            return Verdict(stop_run=Code.UNREACHABLE, detail=detail)
        if answer.http_status is None:
            return NOTHING
        if quota.spent(answer.rate) and location.stopped_by is None:
            location.stopped_by = Code.DAILY_QUOTA_EXHAUSTED
            log.warning("daily quota spent", location_id=location_id)
        if answer.code is Code.UNAUTHORIZED:
            return self._rejected(location_id, answer)
        if answer.code is Code.MISSING_SCOPE and location.token.can_search:
            location.token.can_search = False
            log.warning(
                "the token lacks a scope; existing conversations' ids stay unknown",
                location_id=location_id,
                scope=constants.SCOPE_READ,
                message=answer.message,
                trace_id=answer.trace_id,
            )
        if not answer.decisive:
            return NOTHING
        token_decided = not location.token.accepted
        location.token.accepted = True
        if answer.code is Code.FORBIDDEN and location.stopped_by is None:
            location.stopped_by = Code.FORBIDDEN
            log.error(
                "location refused to this token; no more requests for it",
                location_id=location_id,
                message=answer.message,
                trace_id=answer.trace_id,
            )
        first = not location.decided
        location.decided = True
        if not first and not token_decided:
            return NOTHING  # the usual answer: nothing new to act on
        return Verdict(decided=(location_id,) if first else (), token_decided=token_decided)

    def _rejected(self, location_id: str, answer: Answer) -> Verdict:
        """A 401: nothing more with this token, wherever it is used."""
        token = self._locations[location_id].token
        if not token.rejected:
            log.error(
                "token rejected; no more requests with it",
                location_id=location_id,
                locations=len(token.locations),
                message=answer.message,
                trace_id=answer.trace_id,
            )
        token.rejected = True
        newly = []
        for name in token.locations:
            user = self._locations[name]
            user.stopped_by = user.stopped_by or Code.UNAUTHORIZED
            if not user.decided:
                user.decided = True
                newly.append(name)
        if all(loc.stopped_by is Code.UNAUTHORIZED for loc in self._locations.values()):
            return Verdict(tuple(newly), True, Code.UNAUTHORIZED)
        return Verdict(tuple(newly), True)

    def _no_token(self, location_id: str, code: Code) -> Verdict:
        """No token could be had for the location (the app is not installed there, or its
        OAuth credential was refused): nothing more is tried there."""
        location = self._locations[location_id]
        if location.stopped_by is None:
            location.stopped_by = code
            log.warning(
                "no token for this location; its rows are skipped",
                location_id=location_id,
                error_code=code,
            )
        first = not location.decided
        location.decided = True
        return Verdict(decided=(location_id,) if first else ())

    def _credentials_locked(self, answer: Answer) -> Verdict:
        """Another run held the OAuth credentials file's lock past its bound: no token can
        be had for now, for any location; the run stops (exit 75, try again later)."""
        if not self._credentials_locked_told:
            self._credentials_locked_told = True
            log.error("the oauth credentials stayed locked; stopping", cause=answer.message)
        return Verdict(stop_run=Code.CREDENTIALS_LOCKED, detail=answer.message)
