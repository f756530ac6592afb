"""The bare client: ``python -m bench.bare``, an aiohttp loop run as its own process, the
floor any client library adds to."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.inputs import location_id
from bench.metrics import CREATE_PATH
from bench.processes import TOKEN, require_loopback

API_VERSION = "2021-07-28"


async def bare_client(
    base_url: str, rows: int, locations: int, prefix: str, concurrency: int
) -> dict[str, Any]:
    """The floor any client library adds to: aiohttp, N workers, one pooled session."""
    import aiohttp

    url = require_loopback(base_url) + CREATE_PATH
    headers = {"Authorization": f"Bearer {TOKEN}", "Version": API_VERSION}
    statuses: Counter[int] = Counter()
    indices = iter(range(rows))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for i in indices:
                body = {"locationId": location_id(i % locations), "contactId": f"{prefix}{i:09d}"}
                async with session.post(url, json=body) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "requests": sum(statuses.values()),
        "elapsed_s": elapsed,
        "per_s": sum(statuses.values()) / elapsed if elapsed > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def bare_client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--locations", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    result = asyncio.run(
        bare_client(args.base_url, args.rows, args.locations, args.prefix, args.concurrency)
    )
    print(json.dumps(result), flush=True)
    return 0


def bare_argv(base_url: str, rows: int, locations: int, prefix: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.bare",
        "--base-url",
        require_loopback(base_url),
        "--rows",
        str(rows),
        "--locations",
        str(locations),
        "--prefix",
        prefix,
        "--concurrency",
        str(concurrency),
    ]


if __name__ == "__main__":
    sys.exit(bare_client_main(sys.argv[1:]))
