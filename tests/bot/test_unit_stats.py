"""/stats: only listed admins get numbers; the numbers come from the counters."""
from types import SimpleNamespace

from bot import messages
from bot.config import Settings
from bot.handlers import stats_reply
from bot.stats import BotStats, format_duration, is_admin
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
    svc.stats.requests = 5
    for latency in (0.1, 0.2, 0.3, 0.4, 2.0):
        svc.stats.answered(latency)
    svc.stats.heatmaps = 2
    clock.now += 3725
    text = stats_reply(1, svc)
    assert "Uptime: 1h 2m" in text
    assert "Requests: 5  answers: 5" in text
    assert "Queue: 3" in text
    assert "p50 300 ms" in text and "p95 1.7 s" in text
    assert "Heat maps served: 2" in text
    assert "Mean batch size: 3.0" in text
    assert "Forward pass: eager: FROZEN_GRAPH=0" in text and "pauses for more urgent work: 7" in text


def test_format_duration():
    assert format_duration(59) == "0m 59s"
    assert format_duration(90061) == "1d 1h 1m"
