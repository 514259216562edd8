"""The panels of deploy/grafana-dashboard.json, computed from recorded scrapes as Prometheus computes them.

Each scrape is ``{"t": seconds, "samples": [[name, labels, value], ...]}`` (bench/scrape_dashboard.py).
``rate`` is the increase over the window divided by it; ``histogram_quantile`` interpolates linearly inside
the bucket the quantile falls in, as Prometheus does.
"""
from __future__ import annotations

import math
from pathlib import Path


def matches(sample_labels: dict, wanted: dict) -> bool:
    """Each wanted label equals its value, or one of several (a tuple: PromQL's ``=~"a|b"``)."""
    return all(sample_labels.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in wanted.items())


def series(scrape: dict, name: str, **labels) -> float:
    """The sum of ``name``'s samples in one scrape whose labels include ``labels`` (NaN when none)."""
    values = [value for sample_name, sample_labels, value in scrape["samples"]
              if sample_name == name and matches(sample_labels, labels)]
    return sum(values) if values else math.nan


def window_pairs(scrapes: list[dict], window: float):
    """(scrape, the earliest scrape within ``window`` seconds before it), once a whole window lies behind."""
    start = 0
    for scrape in scrapes:
        while scrapes[start]["t"] < scrape["t"] - window:
            start += 1
        if scrape["t"] - scrapes[start]["t"] >= window - 1.5:  # a whole window (give or take a scrape)
            yield scrape, scrapes[start]


def rate(scrapes: list[dict], window: float, name: str, **labels) -> tuple[list[float], list[float]]:
    times, values = [], []
    for now, before in window_pairs(scrapes, window):
        times.append(now["t"])
        # A counter's series appears with its first increment: absent before means 0 (the first burst counts).
        values.append((_or_zero(series(now, name, **labels)) - _or_zero(series(before, name, **labels)))
                      / (now["t"] - before["t"]))
    return times, values


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def buckets(scrape: dict, name: str, **labels) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) per bucket of histogram ``name``, summed over the other labels."""
    totals: dict[float, float] = {}
    for sample_name, sample_labels, value in scrape["samples"]:
        if sample_name == name + "_bucket" and matches(sample_labels, labels):
            bound = float(sample_labels["le"])
            totals[bound] = totals.get(bound, 0.0) + value
    return sorted(totals.items())


def histogram_quantile(q: float, increases: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over bucket increases (cumulative); NaN without observations."""
    if not increases or increases[-1][1] <= 0:
        return math.nan
    rank = q * increases[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in increases:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


def quantile_over_time(scrapes: list[dict], window: float, q: float, name: str, **labels):
    times, values = [], []
    for now, before in window_pairs(scrapes, window):
        then = dict(buckets(before, name, **labels))
        increases = [(bound, count - then.get(bound, 0.0)) for bound, count in buckets(now, name, **labels)]
        times.append(now["t"])
        values.append(histogram_quantile(q, increases))
    return times, values


def roles(scrape: dict) -> dict[str, str]:
    """checkpoint -> role (main, canary) from productbot_model_info."""
    return {labels["checkpoint"]: labels["role"] for name, labels, value in scrape["samples"]
            if name == "productbot_model_info" and value == 1}


def draw(scrapes: list[dict], png: Path, window: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    figure.suptitle("productbot: panels of deploy/grafana-dashboard.json, from a real scrape "
                    f"(rates over {window:.0f} s)", fontsize=12)
    times = [s["t"] for s in scrapes]

    ax = axes[0][0]
    for q, style in ((0.5, "-"), (0.95, "--")):
        t, v = quantile_over_time(scrapes, window, q, "productbot_photo_answer_seconds", outcome=("answered", "unsure"))
        ax.plot(t, v, style, label=f"p{q * 100:.0f} photo → answer")
    for q, style in ((0.95, ":"),):
        t, v = quantile_over_time(scrapes, window, q, "productbot_why_first_map_seconds")
        ax.plot(t, v, style, label="p95 /why → first map")
    ax.set_ylabel("seconds")
    ax.set_title("Latency")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    t, v = rate(scrapes, window, "productbot_heatmaps_total")
    ax.plot(t, [x * 60 for x in v], label="final maps sent")
    t, v = rate(scrapes, window, "productbot_requests_total", kind="photo")
    ax.plot(t, [x * 60 for x in v], label="photos")
    ax.set_ylabel("per minute")
    ax.set_title("Photos and heat maps per minute")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    for queue in ("requests", "batch"):
        ax.plot(times, [series(s, "productbot_queue_depth", queue=queue) for s in scrapes], label=queue)
    ax.set_ylabel("requests")
    ax.set_title("Queue depth")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    for outcome in ("busy", "answered", "unsure"):
        t, v = rate(scrapes, window, "productbot_requests_total", kind="photo", outcome=outcome)
        ax.plot(t, [x * 60 for x in v], label=outcome)
    ax.set_ylabel("per minute")
    ax.set_title("Photo outcomes (busy answers)")
    ax.legend(fontsize=8)

    ax = axes[2][0]
    last_roles = roles(scrapes[-1]) if scrapes else {}
    for checkpoint, role in sorted(last_roles.items(), key=lambda item: item[1]):
        point = [series(s, "productbot_live_accuracy_ratio", checkpoint=checkpoint, estimate="point") for s in scrapes]
        low = [series(s, "productbot_live_accuracy_ratio", checkpoint=checkpoint, estimate="wilson_low") for s in scrapes]
        high = [series(s, "productbot_live_accuracy_ratio", checkpoint=checkpoint, estimate="wilson_high") for s in scrapes]
        line, = ax.plot(times, point, label=f"{role} {checkpoint[:8]}")
        ax.fill_between(times, low, high, alpha=0.2, color=line.get_color())
    ax.set_ylim(0, 1)
    ax.set_ylabel("share right")
    ax.set_title("Live accuracy, canary against main (95% Wilson)")
    ax.legend(fontsize=8)

    ax = axes[2][1]
    ax.plot(times, [series(s, "process_resident_memory_bytes") / 2**20 for s in scrapes], label="RSS")
    ax.set_ylabel("MiB")
    ax.set_title("Resident memory")
    ax.legend(fontsize=8)

    for ax in axes[-1]:
        ax.set_xlabel("seconds since the first scrape")
    for row in axes:
        for ax in row:
            ax.grid(alpha=0.3)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=90)
    plt.close(figure)
