"""The micro-batching policy with an explicit clock: size bound, wait bound, round-robin across chats."""
import pytest

from bot.batching import BatchQueue, PendingRequest


def request(chat, name, arrived):
    return PendingRequest(chat, name, arrived, deliver=lambda result, error: None)


def test_not_due_before_the_wait_bound_then_due_exactly_at_it():
    queue = BatchQueue(max_batch=4, max_wait_s=0.010)
    queue.add(request("a", "a1", arrived=100.000))
    queue.add(request("b", "b1", arrived=100.004))
    assert queue.due_in(100.004) == pytest.approx(0.006)
    assert queue.take(100.0099) == []
    assert [r.payload for r in queue.take(100.010)] == ["a1", "b1"]
    assert len(queue) == 0 and queue.due_in(100.02) is None


def test_full_batch_is_due_at_once_and_capped_at_max_batch():
    queue = BatchQueue(max_batch=3, max_wait_s=10.0)
    for i in range(5):
        queue.add(request(f"chat{i}", i, arrived=0.0))
    assert queue.due_in(0.0) == 0.0
    assert [r.payload for r in queue.take(0.0)] == [0, 1, 2]
    assert queue.take(0.0) == []  # two left: wait for more or for the bound
    assert [r.payload for r in queue.take(10.0)] == [3, 4]


def test_round_robin_one_album_cannot_starve_others():
    queue = BatchQueue(max_batch=4, max_wait_s=0.0)
    for i in range(10):
        queue.add(request("album", f"album{i}", arrived=0.0))
    queue.add(request("bob", "bob", arrived=0.001))
    queue.add(request("carol", "carol", arrived=0.002))
    first = [r.payload for r in queue.take(0.01)]
    assert "bob" in first and "carol" in first
    assert first.count("album0") == 1 and len(first) == 4
    # Within a chat, arrival order is kept.
    rest = [r.payload for r in queue.take(0.01)] + [r.payload for r in queue.take(0.01)] + [r.payload for r in queue.take(0.01)]
    assert rest == [f"album{i}" for i in range(2, 10)]


def test_force_takes_what_waits_and_drain_empties():
    queue = BatchQueue(max_batch=8, max_wait_s=5.0)
    queue.add(request("a", 1, arrived=0.0))
    assert queue.take(0.0) == []
    assert [r.payload for r in queue.take(0.0, force=True)] == [1]
    queue.add(request("a", 2, arrived=0.0))
    queue.add(request("b", 3, arrived=0.0))
    assert sorted(r.payload for r in queue.drain()) == [2, 3]
    assert len(queue) == 0


def test_invalid_bounds():
    with pytest.raises(ValueError):
        BatchQueue(max_batch=0, max_wait_s=0.0)
