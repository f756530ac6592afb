"""HighLevel's API as this program speaks it: the client of the two conversation endpoints
(the strict reading of every answer), an answer as plain data with no I/O import
(``answers``: what the decision modules reason about), and the HTTP seam beneath the client
(``transport``: aiohttp, httpx, or httpx over aiohttp).

May import: ``auth`` (who signs a request), ``core``.
"""
