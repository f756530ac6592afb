"""``python -m bench [--quick | --large]``: measure the pipeline against its targets.

Everything runs on this machine over loopback, each program in its own process, the way a
user runs them: the sandbox API (``python -m pipeline.sandbox``) in one, the pipeline
(``python -m pipeline run ...``) in another, and the harness only generates inputs, starts
and times processes, and reads the sandbox's request log afterwards. Server-side figures come
from that log (``GET /_sandbox/state``: receipt time ``t`` on the system-wide monotonic
clock, ``locationId``, ``status`` of every API request), so they describe what the API saw,
not what the client believes it did.

The latency benchmarks (1, 6, 8) play a network whose latency varies, as a real one's does
(issue 23; ``network``): uniform within +-50% of the mean, or log-normal with sigma 0.7 (1% of
answers over 5 x the median). Half of each request's latency passes before the sandbox
receives it, so requests arrive in another order than they left, and receipt times ``t``
carry that. Every table's title names the latency; the capacity benchmark keeps zero latency.

Eight benchmarks, each bounded in time (the sixth and eighth only with ``--large`` or
``--only``; the seventh only with ``--only known``):

1. **Limit utilization**: L locations x 300 rows against a sandbox limited to 100 requests
   per 10 s per location with 80 ms latency, uniform +-50%. Per location span (last
   receipt - first receipt) against the ideal 20 s, the share of the limit used (rows over
   (span + 10 s) x the limit, target >= 0.97), the share of 429 answers, the most requests
   of one location in any 10 s window, exit code, rows created, wall time.
2. **Client capacity**: an unlimited, zero-latency sandbox; a bare aiohttp loop and the
   pipeline take turns on the same 10,000 rows (sandbox reset between), 3 times
   interleaved; medians. Also ``--workers 2`` when the CLI offers it, and the sandbox's own
   ceiling (two bare clients at once against one), with the CPU share of every process
   during the sending window, to say which one is the bottleneck.
3. **Scale of input**: ``pipeline run --dry-run`` over 1,000,000 generated rows (10,000,000
   with ``--large``), Parquet and CSV: wall time and peak RSS of the pipeline process.
4. **Large CSV**: ``pipeline run --dry-run`` over a HighLevel-style contacts export of
   3,000,000 rows and 12 columns (~0.9 GB; 16,000,000 rows, ~5 GB, with ``--large``),
   written to disk a chunk at a time: peak RSS against the file's size.
5. **Start-up**: the wall time of ``pipeline --help``, ``pipeline run --help`` and a usage
   error, beside ``python -c pass`` and the bare import of each library the CLI imports at
   start, medians of 7 runs; and the top imports of ``python -X importtime``.
6. **Latency and locations** (issues 13, 23): 200 locations x 150 rows at 80 ms latency and
   60 x 150 at 600 ms, each uniform +-50% and log-normal sigma 0.7, and 1,000 x 20 at 5 ms
   +-50% (sized to a 2-core machine), each with default settings (the adaptive in-flight
   limit) beside a hand-tuned ``--concurrency 2000``: the span of creates, 429s, rows right
   (in the results and on the server), the pipeline's peak in flight and latency, and the
   default's span over the tuned one (target <= 1.10).
7. **Known pairs** (issue 15): a nightly dry run of 1,000,000 rows against 10,000,000 and
   20,000,000 pairs of earlier results (``--known``), beside the same run without them.
8. **One task of an array job** (issue 18): ``--shard 0/4`` owning 100, then 600 locations,
   input and output on S3 (moto), 100 per 10 s per location at 80 ms +-50%, default settings:
   rows/s against the limit, 429s, peak RSS, CPU, and the checkpoint's segments, bytes and
   store requests (per hour and per 1,000 rows), also at ``--checkpoint-interval 1``.

Exit status: 0 when every figure with a target meets it, 1 when one misses, 2 when a
benchmark could not run at all.

The harness lives beside the package it measures, not in it (it is not in the wheel):

- ``__main__``: the command line, and the run of the benchmarks it names.
- ``harness``: what every benchmark shares (options, the progress log, a failed run's rows).
- ``metrics``: what the sandbox's request log says (spans, windows, send rates, CPU
  shares), and the tables.
- ``inputs``: the generated input files.
- ``network``: the latency a benchmark's sandbox plays (and the flags that play it).
- ``processes``: the sandbox, the pipeline and other children, the CPU sampler, and the
  peak-RSS launcher ``python -m bench.processes``.
- ``bare``: the bare aiohttp client, ``python -m bench.bare``.
- ``limit``, ``capacity``, ``scale``, ``wide``, ``startup``, ``latency``: one benchmark each.

Children run from the repository's root (``processes.REPO``) with the harness's Python, so
``python -m bench.<module>`` finds this package there.
"""
