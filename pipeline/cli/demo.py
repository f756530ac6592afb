"""``make run``: the whole job against the bundled sandbox, as a user would see it.

Starts ``pipeline sandbox`` on a free loopback port in its own process (so the sandbox and
the pipeline share nothing, exactly as with the real API), runs
``pipeline run INPUT -o OUTPUT --base-url <sandbox>`` with the sandbox's token, stops the
sandbox and passes on the run's summary. The sample input has invalid and duplicate rows on
purpose, so the run's exit code 1 ("some rows were not created") is the expected outcome.

The sandbox answers as a real network does, not in a fixed time: a log-normal latency with a
median of 80 ms and sigma 0.5 (1% of answers over 250 ms, some arriving out of order), so the
demo shows the pipeline as it behaves against the live API rather than a best case.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from pipeline.sandbox import DEFAULT_TOKEN

_LISTENING = re.compile(r"listening on (http://\S+)")
# The sandbox's network: median and sigma of a log-normal latency (see pipeline.sandbox.latency).
LATENCY_MS, LATENCY_SIGMA = 80, 0.5


def main(argv: list[str]) -> int:
    sandbox = subprocess.Popen(
        [
            *(sys.executable, "-m", "pipeline.sandbox", "--port", "0"),
            *("--latency-ms", str(LATENCY_MS), "--latency-sigma", str(LATENCY_SIGMA)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sandbox.stdout is not None
        line = sandbox.stdout.readline()
        match = _LISTENING.search(line)
        if not match:
            print(f"demo: the sandbox did not start: {line.strip()!r}", file=sys.stderr)
            return 2
        base_url = match.group(1)
        print(
            f"sandbox API at {base_url} (100 requests per 10 s per location, like HighLevel; "
            f"latency log-normal, median {LATENCY_MS} ms, sigma {LATENCY_SIGMA})",
            flush=True,
        )
        env = {**os.environ, "GHL_TOKEN": DEFAULT_TOKEN}
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            *argv,
            "--base-url",
            base_url,
            "--overwrite",
        ]
        print(
            "$ pipeline run " + " ".join(argv) + f" --base-url {base_url} --overwrite", flush=True
        )
        code = subprocess.call(command, env=env)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    if code == 1:
        print(
            "exit code 1: expected here, the sample holds invalid rows on purpose (see error codes)"
        )
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
