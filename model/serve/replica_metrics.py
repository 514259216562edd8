"""The replicas' metrics, through Ray's metrics API (``ray.util.metrics``): the bot's families, on the cluster.

Each Classifier and Explainer replica records into Ray's per-node metrics agent, which Prometheus scrapes
on every node (head and workers) at ``--metrics-export-port`` (docs/scaling.md). Ray puts ``ray_`` before
every name; deploy/prometheus.yml strips it again for ``ray_productbot_*``, so the dashboard reads
``productbot_forward_pass_seconds`` from the gateway (none: it runs no model), an in-process bot and every
replica alike, told apart by the ``deployment`` label (absent on the bot). The families:

- ``productbot_forward_pass_seconds{runtime, precision, deployment}``: one classification batch (histogram);
- ``productbot_forward_batch_photos{runtime, precision, deployment}``: its photos (histogram);
- ``productbot_map_level_seconds{level, cached, deployment}``: one heat-map level on an Explainer (histogram);
- ``productbot_replica_requests_total{deployment, outcome}``: answered, refused (not an image), deadline;
- ``productbot_queue_depth{queue="maps", deployment}``: levels waiting on an Explainer replica (gauge);
- ``productbot_model_info{checkpoint, runtime, precision, role="main", deployment}`` = 1.
"""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

PREFIX = "productbot_"
# The bot's buckets (bot/ops/metrics.py; tests/test_replica_metrics.py checks they agree), so one query reads both.
FORWARD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
WHY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ReplicaMetrics:
    """One replica's recorders; ``deployment`` is its Serve deployment's name (Classifier, Explainer)."""

    def __init__(self, deployment: str):
        self.deployment = deployment
        self._forward = Histogram(PREFIX + "forward_pass_seconds", "One classification batch's forward pass.",
                                  boundaries=list(FORWARD_BUCKETS), tag_keys=("runtime", "precision", "deployment"))
        self._batch = Histogram(PREFIX + "forward_batch_photos", "Photos in one classification batch.",
                                boundaries=list(BATCH_BUCKETS), tag_keys=("runtime", "precision", "deployment"))
        self._level = Histogram(PREFIX + "map_level_seconds", "One heat-map level on an Explainer replica.",
                                boundaries=list(WHY_BUCKETS), tag_keys=("level", "cached", "deployment"))
        # Ray's exporter adds _total to a counter's name.
        self._requests = Counter(PREFIX + "replica_requests", "Requests a replica handled, by outcome.",
                                 tag_keys=("deployment", "outcome"))
        self._queue = Gauge(PREFIX + "queue_depth", "Work waiting on a replica, per queue.",
                            tag_keys=("queue", "deployment"))
        self._model = Gauge(PREFIX + "model_info", "The model a replica serves.",
                            tag_keys=("checkpoint", "runtime", "precision", "role", "deployment"))

    def model(self, engine, role: str = "main") -> None:
        preparation = getattr(engine, "preparation", engine)  # an engine, or anything with runtime and precision
        self._model.set(1, tags={"checkpoint": engine.checkpoint_id,
                                 "runtime": getattr(preparation, "runtime", "") or "unknown",
                                 "precision": getattr(preparation, "precision", "") or "unknown", "role": role,
                                 "deployment": self.deployment})

    def observe_forward(self, runtime: str, precision: str, seconds: float, photos: int) -> None:
        """The same observer signature as the bot's scheduler (bot.ops.metrics.BotMetrics.observe_forward)."""
        tags = {"runtime": runtime or "unknown", "precision": precision or "unknown", "deployment": self.deployment}
        self._forward.observe(seconds, tags=tags)
        self._batch.observe(photos, tags=tags)

    def map_level(self, seconds: float, coarse: bool, cached: bool) -> None:
        self.level("coarse" if coarse else "fine", seconds, cached)

    def level(self, level: str, seconds: float, cached: bool) -> None:
        self._level.observe(seconds, tags={"level": level, "cached": str(cached).lower(), "deployment": self.deployment})

    def request(self, outcome: str) -> None:
        self._requests.inc(1, tags={"deployment": self.deployment, "outcome": outcome})

    def queue_depth(self, queue: str, depth: int) -> None:
        self._queue.set(depth, tags={"queue": queue, "deployment": self.deployment})


class ServingObserver:
    """The serving core's observer (model.serving.compute.SchedulerObserver) for a replica: each classification batch
    and each heat-map level into ``metrics``, labelled by the runtime and precision of the model that ran it."""

    def __init__(self, metrics: ReplicaMetrics, engines):
        self._metrics, self._engines = metrics, engines  # engines(): the replica's models by name, as served now

    def batch_done(self, model: str, size: int, seconds: float) -> None:
        preparation = getattr(self._engines().get(model), "preparation", None)
        self._metrics.observe_forward(getattr(preparation, "runtime", ""), getattr(preparation, "precision", ""),
                                      seconds, size)

    def level_done(self, model: str, patch: int, stride: int, seconds: float, cached: bool) -> None:
        self._metrics.level(f"{patch}x{stride}", seconds, cached)
