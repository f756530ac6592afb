"""The benchmark harness's own parts (the figures are in BENCHMARKS.md, not asserted)."""
