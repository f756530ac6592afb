"""The end-of-run account: counts by status and error code, requests, time and throughput.

Computed from the results table itself, so the summary can never disagree with the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.outcomes import Code, Status

SUCCESS_STATUSES = frozenset({Status.CREATED, Status.EXISTS, Status.DUPLICATE})


@dataclass(frozen=True, slots=True)
class Summary:
    rows: int
    by_status: dict[str, int]
    by_error_code: dict[str, int]
    requests: int
    elapsed_s: float
    problem_rows: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def all_succeeded(self) -> bool:
        """Exit code 0: no row is invalid, failed, or skipped for a reason other than a dry run."""
        return self.problem_rows == 0

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "by_status": self.by_status,
            "by_error_code": self.by_error_code,
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests_per_s, 1),
        }


def summarise(results: pl.DataFrame, *, requests: int, elapsed_s: float) -> Summary:
    def counts(column: str) -> dict[str, int]:
        grouped = (
            results.drop_nulls(column)
            .group_by(column)
            .len()
            .sort(["len", column], descending=[True, False])
        )
        return dict(zip(grouped[column].to_list(), grouped["len"].to_list(), strict=True))

    return Summary(
        rows=results.height,
        by_status=counts("status"),
        by_error_code=counts("error_code"),
        requests=requests,
        elapsed_s=elapsed_s,
        problem_rows=results.filter(
            ~pl.col("status").is_in([s.value for s in SUCCESS_STATUSES])
            & ~(
                (pl.col("status") == Status.SKIPPED.value)
                & (pl.col("error_code") == Code.DRY_RUN.value)
            )
        ).height,
    )


def render(summary: Summary, output: str) -> str:
    lines = [f"{summary.rows} rows -> {output}"]
    order = [s.value for s in Status]
    for status in sorted(
        summary.by_status, key=lambda s: order.index(s) if s in order else len(order)
    ):
        lines.append(f"  {status:<10} {summary.by_status[status]:>9}")
    if summary.by_error_code:
        lines.append("error codes:")
        for code, count in summary.by_error_code.items():
            lines.append(f"  {code:<24} {count:>9}")
    lines.append(
        f"{summary.requests} requests in {summary.elapsed_s:.2f}s "
        f"({summary.requests_per_s:.1f} requests/s)"
    )
    return "\n".join(lines)
