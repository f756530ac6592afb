"""Create HighLevel conversations in bulk: read → validate and plan → send → journal → results."""

import os

# Polars' streaming engine cuts data into morsels of this many rows; it reads the setting
# once, so it is set before any module imports polars (a value in the environment wins).
# With the default (100,000) the allocator held up to 1 GB of freed buffers while the
# results were written: peak RSS on a 15M-row CSV varied from 0.55 to 1.6 GB between runs.
# With 20,000 it stayed at 0.55-0.58 GB, at the same speed (BENCHMARKS.md, "Large CSV files").
os.environ.setdefault("POLARS_IDEAL_MORSEL_SIZE", "20000")
