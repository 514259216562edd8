"""The operator's view: one structured log line per request, /stats' numbers (read from bot.ops.metrics), the admin check."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from bot.ops.metrics import BAD_INPUT, ERRORS, BotMetrics

request_log = logging.getLogger("bot.requests")


def log_request(chat_id: int | None, kind: str, started: float, result: str, **extra) -> None:
    """``request chat=.. kind=.. latency_ms=.. result=.. [key=value ...]``: one line per request, grep-able."""
    details = "".join(f" {key}={value}" for key, value in extra.items())
    request_log.info("request chat=%s kind=%s latency_ms=%d result=%s%s", chat_id, kind,
                     (time.monotonic() - started) * 1000, result, details)


def is_admin(user_id: int | None, admin_ids: Iterable[int]) -> bool:
    """Only users listed in ADMIN_USER_IDS; no list means nobody (never everybody)."""
    return user_id is not None and user_id in frozenset(admin_ids)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def format_latency(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@dataclass
class BotStats:
    """/stats' numbers: the counters are read from the Prometheus registry (:mod:`bot.ops.metrics`), the one source
    for /metrics and /stats; the recent answer latencies are kept here too, for exact percentiles."""

    clock: Callable[[], float] = time.monotonic
    metrics: BotMetrics = field(default_factory=BotMetrics)
    started: float = field(default=0.0)
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))

    def __post_init__(self) -> None:
        self.started = self.clock()

    def record(self, kind: str, result: str, answered: bool, latency_s: float, counted: bool = False,
               unsure: bool = False) -> None:
        """One request that ended with ``result`` (bot.handlers.request's wrapper calls it for every request)."""
        if counted:
            self.metrics.counted_kinds.add(kind)
        self.metrics.request(kind, result, answered, latency_s, unsure)
        if answered:
            self.latencies.append(latency_s)

    def _requests(self, **match) -> int:
        return int(self.metrics.total(self.metrics.requests, **match))

    @property
    def requests(self) -> int:
        return self._requests(kind=self.metrics.counted_kinds)

    @property
    def answers(self) -> int:
        return self._requests(outcome=("answered", "unsure"))

    @property
    def errors(self) -> int:
        return self._requests(reason=ERRORS) + int(self.metrics.total(self.metrics.unhandled_errors))

    @property
    def busy(self) -> int:
        return self._requests(outcome="busy")

    @property
    def bad_input(self) -> int:
        return self._requests(reason=BAD_INPUT)

    @property
    def heatmaps(self) -> int:
        return int(self.metrics.total(self.metrics.heatmaps))

    @property
    def heatmaps_cached(self) -> int:
        return int(self.metrics.total(self.metrics.heatmaps, cached="true"))

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(np.asarray(self.latencies), q)) if self.latencies else None

    def snapshot(self, queue_length: int) -> dict:
        return {
            "uptime": format_duration(self.clock() - self.started),
            "requests": self.requests,
            "answers": self.answers,
            "errors": self.errors,
            "busy": self.busy,
            "bad_input": self.bad_input,
            "queue_length": queue_length,
            "latency_p50": format_latency(self.percentile(50)),
            "latency_p95": format_latency(self.percentile(95)),
            "latency_samples": len(self.latencies),
            "heatmaps": self.heatmaps,
            "heatmaps_cached": self.heatmaps_cached,
        }
