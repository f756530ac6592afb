"""The small core every other package builds on: the API's constants (the only module the
sandbox shares), the errors and their exit codes, the results' vocabulary (statuses, error
codes, columns) and their polars types, and the log setup with its redaction.

May import: nothing of ``pipeline`` outside ``core``. Importing it loads no polars, aiohttp,
httpx or obstore (``schema`` loads polars when it is imported itself).
"""
