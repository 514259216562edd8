"""The bot's Prometheus metrics: one registry per Application, the only source of /metrics and /stats' counters.

Every family carries the ``productbot_`` prefix, base units (``_seconds``) and ``_total`` on counters
(https://prometheus.io/docs/practices/naming/). The process collector adds ``process_resident_memory_bytes``,
``process_cpu_seconds_total`` and the rest on top. Counters and histograms are written where the event
happens (the request wrapper, /why, the journal's resume, feedback, the Telegram rate limiter, the
scheduler's forward passes, which call :meth:`BotMetrics.observe_forward` from their compute threads:
prometheus_client is thread-safe). The gauges describe state (queues, the journal, the caches, the models,
live accuracy) and are sampled from the event loop by :mod:`bot.ops.health`, never from the HTTP thread.

The cluster's replicas export the forward-pass family under the same name through Ray's metrics
(model/serve/replica_metrics.py), so one dashboard reads both.
"""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

PREFIX = "productbot_"
# A photo's answer: 5 ms (a cached or tiny model on a GPU) to 30 s (a queue at its limit).
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A /why's maps: a quarter second (cached) to five minutes (WHY_DEADLINE_S's default).
WHY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# One forward pass of a classification batch: 1 ms (GPU) to 10 s (a big batch on a slow CPU).
FORWARD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# A request's result (bot.handlers.request.Outcome.result) -> its outcome label; answered requests are
# "answered" or "unsure" (the answer said it was not sure). What is not listed is a plain reply (/start).
REFUSED = frozenset({"bad_image", "too_large", "no_photo", "expired", "not_admin", "refused", "photo_gone",
                     "outdated", "feedback_off"})
FAILED = frozenset({"error", "download_failed", "album_not_sent", "save_failed"})
OUTCOMES = ("answered", "unsure", "refused", "busy", "failed", "deferred", "replied")
BAD_INPUT = frozenset({"bad_image", "too_large"})
ERRORS = frozenset({"error", "download_failed"})  # /stats' "errors": album_not_sent repeats its sender's error
VERDICTS = ("right", "wrong", "none_of_these")


def outcome_of(result: str, answered: bool, unsure: bool = False) -> tuple[str, str]:
    """(outcome, reason) labels of a request that ended with ``result``."""
    if answered:
        return ("unsure" if unsure else "answered"), ""
    if result == "busy":
        return "busy", ""
    if result == "deferred":
        return "deferred", ""
    if result in REFUSED:
        return "refused", result
    if result in FAILED:
        return "failed", result
    return "replied", ""


class BotMetrics:
    """The families, in their own :class:`CollectorRegistry` (several bots may run in one test process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry = registry or CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.counted_kinds: set[str] = set()  # kinds /stats counts as requests (photos, files, heat maps)
        self._models_shown: set[tuple[str, str, str, str]] = set()

        def counter(name, doc, labels=()):
            return Counter(PREFIX + name, doc, list(labels), registry=registry)

        def gauge(name, doc, labels=()):
            return Gauge(PREFIX + name, doc, list(labels), registry=registry)

        def histogram(name, doc, buckets, labels=()):
            return Histogram(PREFIX + name, doc, list(labels), buckets=buckets, registry=registry)

        self.requests = counter("requests", "Requests handled, by kind and outcome (reason: why refused or failed).",
                                ("kind", "outcome", "reason"))
        self.unhandled_errors = counter("unhandled_errors", "Errors outside any handler (e.g. while polling).")
        self.answer_seconds = histogram("photo_answer_seconds", "A photo's or image file's arrival to its reply sent "
                                        "(the answer, or why not), by outcome.", ANSWER_BUCKETS, ("kind", "outcome"))
        self.why_first_map_seconds = histogram("why_first_map_seconds", "/why: arrival to the first map sent.",
                                               WHY_BUCKETS)
        self.why_final_map_seconds = histogram("why_final_map_seconds", "/why: arrival to the final map sent.",
                                               WHY_BUCKETS)
        self.heatmaps = counter("heatmaps", "Final heat maps sent (cached: from a kept grid, no inference).",
                                ("cached",))
        self.forward_seconds = histogram("forward_pass_seconds", "One classification batch's forward pass.",
                                         FORWARD_BUCKETS, ("runtime", "precision"))
        self.forward_batch = histogram("forward_batch_photos", "Photos in one classification batch.", BATCH_BUCKETS,
                                       ("runtime", "precision"))
        self.telegram_retries = counter("telegram_retries", "Bot API calls sent again after a 429.", ("method",))
        self.telegram_rate_limited = counter("telegram_rate_limited", "Bot API 429 (Too Many Requests) answers.",
                                             ("method",))
        self.journal_resumed = counter("journal_resumed", "Unfinished requests queued again at a start.")
        self.journal_poison_pills = counter("journal_poison_pills",
                                            "Journal entries given up on: they failed every start they were resumed in.")
        self.feedback = counter("feedback", "Users' judgements of answers, by verdict.", ("verdict",))
        self.queue_depth = gauge("queue_depth", "Requests waiting or running, per queue.", ("queue",))
        self.journal_open = gauge("journal_open_entries", "Accepted updates not answered yet (the journal).")
        self.maps_cached = gauge("maps_cached", "Occlusion results kept for /why answered from the cache.")
        self.model_info = gauge("model_info", "The models served: 1 per (checkpoint, runtime, precision, role).",
                                ("checkpoint", "runtime", "precision", "role"))
        self.live_accuracy = gauge("live_accuracy_ratio", "Users' judgements: share right, with its 95% Wilson bounds.",
                                   ("checkpoint", "estimate"))
        self.live_judged = gauge("live_judged_answers", "Answers users judged, per checkpoint.", ("checkpoint",))
        self.ready = gauge("ready", "1 while /readyz answers 200.")
        self.live = gauge("live", "1 while /livez answers 200.")
        for kind in ("photo", "document"):
            self.answer_seconds.labels(kind, "answered")  # present at 0 before the first photo: rate() needs it
        for verdict in VERDICTS:
            self.feedback.labels(verdict)

    # ---- events ----------------------------------------------------------------------------------------
    def request(self, kind: str, result: str, answered: bool, latency_s: float, unsure: bool = False) -> None:
        outcome, reason = outcome_of(result, answered, unsure)
        self.requests.labels(kind, outcome, reason).inc()
        if kind in ("photo", "document") and outcome != "deferred":  # deferred: no reply yet (the next start's)
            self.answer_seconds.labels(kind, outcome).observe(latency_s)

    def heatmap_sent(self, cached: bool) -> None:
        self.heatmaps.labels(str(bool(cached)).lower()).inc()

    def observe_forward(self, runtime: str, precision: str, seconds: float, photos: int) -> None:
        """The scheduler's forward-pass observer (called on a compute thread)."""
        self.forward_seconds.labels(runtime or "unknown", precision or "unknown").observe(seconds)
        self.forward_batch.labels(runtime or "unknown", precision or "unknown").observe(photos)

    def telegram_429(self, method: str, retried: bool) -> None:
        """The rate limiter's observer: every 429, and whether it is sent again."""
        self.telegram_rate_limited.labels(method).inc()
        if retried:
            self.telegram_retries.labels(method).inc()

    def resumed(self, count: int) -> None:
        self.journal_resumed.inc(count)

    def poison_pill(self, count: int = 1) -> None:
        """A journal entry dropped because it keeps failing (bot/state/journal.py calls it through ``Journal.on_poison``)."""
        self.journal_poison_pills.inc(count)

    def feedback_given(self, label: str, predicted: str, none_of_these: str) -> None:
        self.feedback.labels("none_of_these" if label == none_of_these else "right" if label == predicted
                             else "wrong").inc()

    # ---- state, sampled from the event loop ------------------------------------------------------------
    def set_models(self, models: Iterable[tuple[str, object]]) -> None:
        """``(role, engine)`` pairs: ``main`` and ``canary`` (an engine's preparation says how it computes; a cluster's
        model view says it itself)."""
        def how(model) -> object:
            return getattr(model, "preparation", None) or model

        current = {(getattr(model, "checkpoint_id", "") or "", getattr(how(model), "runtime", "") or "",
                    getattr(how(model), "precision", "") or "", role) for role, model in models}
        for labels in self._models_shown - current:  # a reload or a canary's end: the old series goes
            self.model_info.remove(*labels)
        for labels in current:
            self.model_info.labels(*labels).set(1)
        self._models_shown = current

    def set_live_accuracy(self, scores) -> None:
        """``model.live_accuracy.CheckpointScore`` per checkpoint."""
        for score in scores:
            self.live_judged.labels(score.checkpoint_id).set(score.judged)
            if score.accuracy is None:
                continue
            low, high = score.interval
            for estimate, value in (("point", score.accuracy), ("wilson_low", low), ("wilson_high", high)):
                self.live_accuracy.labels(score.checkpoint_id, estimate).set(value)

    # ---- reading back (for /stats) ---------------------------------------------------------------------
    def total(self, metric, **match: str | Iterable[str]) -> float:
        """The sum of ``metric``'s samples whose labels match (a string, or any of several)."""
        value = 0.0
        for family in metric.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total") and family.type == "counter":
                    continue  # the _created samples
                if all(sample.labels.get(key) in ((want,) if isinstance(want, str) else want)
                       for key, want in match.items()):
                    value += sample.value
        return value


class _ForwardPasses:
    """The serving core's observer (model.serving.compute.SchedulerObserver): each classification batch's forward
    pass into the histograms, labelled by the runtime and precision of the model that ran it."""

    def __init__(self, metrics: BotMetrics, inference) -> None:
        self._metrics, self._inference = metrics, inference

    def batch_done(self, model: str, size: int, seconds: float) -> None:
        engine = self._inference.models.get(model)
        preparation = getattr(engine, "preparation", None)
        self._metrics.observe_forward(getattr(preparation, "runtime", ""), getattr(preparation, "precision", ""),
                                      seconds, size)

    def level_done(self, model: str, patch: int, stride: int, seconds: float, cached: bool) -> None:
        return None


def observe_inference(metrics: BotMetrics, inference) -> None:
    """Hook the metrics into an inference backend: the in-process serving core's observer (a cluster client has
    none: its replicas export the forward passes themselves, model/serve/replica_metrics.py)."""
    core = getattr(inference, "core", None)
    if core is not None:
        core.observer = _ForwardPasses(metrics, inference)
