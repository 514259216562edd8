"""The replicas' Ray metrics: the bot's family names and buckets, so one dashboard and one query read both."""
from types import SimpleNamespace

from bot.ops import metrics as bot_metrics
from model.serve import replica_metrics


def test_the_replicas_use_the_bots_buckets_and_prefix():
    assert replica_metrics.FORWARD_BUCKETS == bot_metrics.FORWARD_BUCKETS
    assert replica_metrics.BATCH_BUCKETS == bot_metrics.BATCH_BUCKETS
    assert replica_metrics.WHY_BUCKETS == bot_metrics.WHY_BUCKETS
    assert replica_metrics.PREFIX == bot_metrics.PREFIX


def test_a_replica_records_without_a_cluster():
    """ray.util.metrics records locally when no Ray worker runs (the replica's calls must never raise)."""
    recorder = replica_metrics.ReplicaMetrics("Classifier")
    recorder.model(SimpleNamespace(checkpoint_id="abc", runtime="torch", precision="fp32"))
    recorder.observe_forward("torch", "fp32", 0.01, 4)
    recorder.map_level(0.5, coarse=True, cached=False)
    recorder.request("answered")
    recorder.queue_depth("maps", 2)
