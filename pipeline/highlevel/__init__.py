"""HighLevel's API as this program speaks it: the client of the two conversation
endpoints (the strict reading of every answer, ``client.Answer``) and the HTTP seam beneath
it (``transport``: aiohttp, httpx, or httpx over aiohttp).

May import: ``auth`` (who signs a request), ``core``.
"""
