"""The operator's view: one structured log line per request, counters for /stats, the admin check.

Counters are updated from the event loop only, so they need no lock.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

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
    """Requests (photos, documents, /why), answers, errors and recent answer latencies."""

    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    requests: int = 0
    answers: int = 0
    errors: int = 0
    busy: int = 0
    bad_input: int = 0
    heatmaps: int = 0
    heatmaps_cached: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))

    def __post_init__(self) -> None:
        self.started = self.clock()

    def answered(self, latency_s: float) -> None:
        self.answers += 1
        self.latencies.append(latency_s)

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
