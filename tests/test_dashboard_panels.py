"""bench/dashboard_panels.py computes the panels as Prometheus would: rate and histogram_quantile."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from dashboard_panels import histogram_quantile, rate  # noqa: E402


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus():
    increases = [(0.1, 2.0), (0.5, 6.0), (1.0, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(0.5, increases) == 0.1 + 0.4 * (5 - 2) / 4  # rank 5 in (0.1, 0.5]
    assert histogram_quantile(0.95, increases) == 0.5 + 0.5 * (9.5 - 6) / 4
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf: the last finite bound


def test_rate_counts_a_counter_that_appears_mid_window_from_zero():
    scrapes = [{"t": float(t), "samples": [] if t < 3 else [["c_total", {}, 5.0]]} for t in range(0, 12)]
    times, values = rate(scrapes, 10.0, "c_total")
    assert times[0] >= 8.5 and values[-1] == 5.0 / 10.0
