"""Sending every planned row under the limits: the engine (``sender`` over ``requests``,
``looking`` and ``recording``; ``session``, ``workers``), the limits (``limiter`` over
``window``, ``inflight``, ``peers``), and the pure decisions it carries out (``retrying``
with ``backoff``, ``guards``, ``quota``, ``lookups``' schedule, ``watchdog``; they import no
HTTP library, their answers are ``highlevel.answers``).

May import: ``highlevel`` (the client), ``auth`` (signing), ``state`` (the journal),
``core``. The decision modules hold state and arithmetic only, with an injected clock.
"""
