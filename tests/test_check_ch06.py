"""Chapter 06's percentile check: a p99 above the largest sample is refused, whatever the data."""

from __future__ import annotations

import statistics

from wslab import check

from .test_check import expect_fail


def test_the_default_method_puts_p99_above_the_maximum_of_ten_samples() -> None:
    """The fact the chapter and its check rest on (statistics' 'exclusive' method extrapolates)."""
    ten = [float(n) for n in range(1, 11)]
    assert round(statistics.quantiles(ten, n=100)[98], 2) == 10.89 > max(ten)
    assert round(statistics.quantiles(ten, n=100, method="inclusive")[98], 2) == 9.91


def percentiles_right_on_big_samples_only(samples):  # type: ignore[no-untyped-def]
    """Inclusive cut points for 100 samples or more, the default method below: passes the first test data only."""
    method = "inclusive" if len(samples) >= 100 else "exclusive"
    cuts = statistics.quantiles(samples, n=100, method=method)
    return {"p50": cuts[49], "p99": cuts[98], "max": max(samples)}


async def test_percentiles_fails_a_p99_above_the_maximum(capsys) -> None:  # type: ignore[no-untyped-def]
    await expect_fail(
        check.percentiles(percentiles_right_on_big_samples_only), capsys,
        "sent: ten round trips: 1 to 10", "a p99 above the maximum is no measurement", "method='inclusive'",
    )
