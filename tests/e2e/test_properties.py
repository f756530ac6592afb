"""Property: whatever the input, every data row appears exactly once in the results, in order,
and every conversation id in the results is the one the server created for that pair."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.app.config import RunConfig
from pipeline.app.job import Job
from pipeline.app.run import execute
from pipeline.sandbox import SandboxConfig, SandboxThread
from pipeline.state.output_files import OutputFiles
from tests.conftest import TOKEN

# Small alphabets so that duplicates and collisions with earlier examples are common.
ids = st.one_of(
    st.sampled_from(["a", "b", "c", "000", "L1", "L2"]),
    st.text(alphabet="ab/ ?#%\"'\n\t,é", max_size=4),
    st.just(""),
    st.text(alphabet="xyz", min_size=63, max_size=66),
)
tables = st.lists(st.tuples(ids, ids), max_size=40)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxThread]:
    with SandboxThread(SandboxConfig(tokens=[TOKEN], rate_max=0)) as sandbox:
        yield sandbox


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=tables, fmt=st.sampled_from(["csv", "parquet"]))
def test_every_row_exactly_once(
    server: SandboxThread, rows: list[tuple[str, str]], fmt: str
) -> None:
    frame = pl.DataFrame(
        {"contactId": [c for c, _ in rows], "locationId": [loc for _, loc in rows]},
        schema={"contactId": pl.String, "locationId": pl.String},
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"in.{fmt}"
        if fmt == "csv":
            frame.write_csv(src)
        else:
            frame.write_parquet(src)
        out = Path(tmp) / "out.parquet"
        config = RunConfig(base_url=server.base_url, rate="10000/1s", max_attempts=1)
        execute(Job(config, str(src), OutputFiles(out)), TOKEN)
        results = pl.read_parquet(out)

    if fmt == "csv":  # a CSV line with every field empty is a blank line, not a data row
        rows = [(c, loc) for c, loc in rows if c or loc]
    assert results["row_index"].to_list() == list(range(len(rows)))
    assert set(results["status"]) <= {"created", "exists", "duplicate", "invalid"}
    created = server.state.conversations()
    first_id: dict[tuple[str, str], str | None] = {}
    for (contact, location), row in zip(rows, results.iter_rows(named=True), strict=True):
        assert row["contact_id"] == (contact.strip() or None)
        assert row["location_id"] == (location.strip() or None)
        key = (row["location_id"], row["contact_id"])
        if row["status"] == "created":
            assert row["conversation_id"] == created[key]
        if row["status"] in ("created", "exists"):
            assert key not in first_id  # a pair is sent once per run
            first_id[key] = row["conversation_id"]
        if row["status"] == "duplicate":
            assert row["conversation_id"] == first_id[key]  # copied from the row it repeats
