"""/stats: only listed admins get numbers; the numbers come from the counters."""
from types import SimpleNamespace

from bot import messages
from bot.config import Settings
from bot.handlers.commands import stats_reply
from bot.ops.stats import BotStats, format_duration, is_admin
from model.runtime import ModelPreparation


def test_is_admin_needs_listing():
    assert is_admin(7, {7, 8})
    assert not is_admin(9, {7, 8})
    assert not is_admin(None, {7})
    assert not is_admin(7, set())  # no list: nobody is admin


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def services(admins):
    clock = FakeClock()
    stats = BotStats(clock=clock)
    inference = SimpleNamespace(queue_length=lambda: 3, stats_lines=lambda: {
        "mean_batch": "3.0", "forward": ModelPreparation("eager", "FROZEN_GRAPH=0").describe(), "heatmap_pauses": 7})
    settings = Settings(token="1:x", admin_user_ids=frozenset(admins))
    return SimpleNamespace(settings=settings, stats=stats, inference=inference, canary=None), clock


def test_stats_refuses_non_admins():
    svc, _ = services({1})
    assert stats_reply(2, svc) == messages.NOT_ADMIN
    assert stats_reply(None, svc) == messages.NOT_ADMIN


def test_stats_for_admin_reports_counters_and_percentiles():
    svc, clock = services({1})
    for latency in (0.1, 0.2, 0.3, 0.4, 2.0):
        svc.stats.record("photo", "answered", answered=True, latency_s=latency, counted=True)
    for cached in (False, True):
        svc.stats.metrics.heatmap_sent(cached)
    clock.now += 3725
    text = stats_reply(1, svc)
    assert "Uptime: 1h 2m" in text
    assert "Requests: 5  answers: 5" in text
    assert "Queue: 3" in text
    assert "p50 300 ms" in text and "p95 1.7 s" in text
    assert "Heat maps served: 2" in text
    assert svc.stats.heatmaps_cached == 1
    assert "Mean batch size: 3.0" in text
    assert "Forward pass: eager: FROZEN_GRAPH=0" in text and "pauses for more urgent work: 7" in text


def test_format_duration():
    assert format_duration(59) == "0m 59s"
    assert format_duration(90061) == "1d 1h 1m"


def test_stats_counts_come_from_the_metrics_registry():
    """/stats and /metrics read one registry: every number /stats shows is a sum of its samples."""
    svc, _ = services({1})
    stats = svc.stats
    stats.record("photo", "answered", answered=True, latency_s=0.2, counted=True)
    stats.record("photo", "answered", answered=True, latency_s=0.3, counted=True, unsure=True)
    stats.record("document", "bad_image", answered=False, latency_s=0.1, counted=True)
    stats.record("photo", "busy", answered=False, latency_s=0.1, counted=True)
    stats.record("why", "error", answered=False, latency_s=1.0, counted=True)
    stats.record("start", "sent", answered=False, latency_s=0.01)
    assert (stats.requests, stats.answers, stats.bad_input, stats.busy, stats.errors) == (5, 2, 1, 1, 1)
    registry = stats.metrics.registry
    value = registry.get_sample_value
    assert value("productbot_requests_total", {"kind": "photo", "outcome": "unsure", "reason": ""}) == 1
    assert value("productbot_requests_total", {"kind": "document", "outcome": "refused", "reason": "bad_image"}) == 1
    assert value("productbot_requests_total", {"kind": "why", "outcome": "failed", "reason": "error"}) == 1
    assert value("productbot_requests_total", {"kind": "start", "outcome": "replied", "reason": ""}) == 1
    # Every photo's reply is timed, by outcome: answers apart from the fast "busy" ones.
    assert value("productbot_photo_answer_seconds_count", {"kind": "photo", "outcome": "answered"}) == 1
    assert value("productbot_photo_answer_seconds_count", {"kind": "photo", "outcome": "unsure"}) == 1
    assert value("productbot_photo_answer_seconds_count", {"kind": "photo", "outcome": "busy"}) == 1
    assert value("productbot_photo_answer_seconds_count", {"kind": "document", "outcome": "refused"}) == 1
