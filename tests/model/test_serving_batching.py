"""The micro-batching policy with an explicit clock: size bound, wait bound, round-robin across chats, and
waiting only for photos known to be on their way."""
import pytest

from model.serving.batching import MIN_SHARE, BatchQueue, PendingRequest, share_of_work


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


def test_nothing_on_the_way_means_no_wait():
    queue = BatchQueue(max_batch=8, max_wait_s=5.0)
    queue.add(request("a", 1, arrived=0.0))
    assert queue.due_in(0.0, on_the_way=0) == 0.0
    assert [r.payload for r in queue.take(0.0, on_the_way=0)] == [1]


def test_waits_for_photos_on_their_way_up_to_the_bound():
    queue = BatchQueue(max_batch=8, max_wait_s=0.2)
    queue.add(request("a", 1, arrived=0.0))
    assert queue.due_in(0.05, on_the_way=3) == pytest.approx(0.15)
    assert queue.take(0.05, on_the_way=3) == []
    queue.add(request("b", 2, arrived=0.06))
    assert queue.take(0.07, on_the_way=2) == []
    queue.add(request("c", 3, arrived=0.08))
    assert [r.payload for r in queue.take(0.2, on_the_way=1)] == [1, 2, 3]  # the bound: the last one is late


def test_the_last_photo_on_its_way_makes_the_batch_due():
    queue = BatchQueue(max_batch=8, max_wait_s=10.0)
    queue.add(request("a", 1, arrived=0.0))
    assert queue.take(0.01, on_the_way=1) == []
    queue.add(request("b", 2, arrived=0.02))
    assert [r.payload for r in queue.take(0.02, on_the_way=0)] == [1, 2]


def test_a_full_batch_does_not_wait_for_more_on_their_way():
    queue = BatchQueue(max_batch=2, max_wait_s=10.0)
    for i in range(3):
        queue.add(request(f"c{i}", i, arrived=0.0))
    assert [r.payload for r in queue.take(0.0, on_the_way=5)] == [0, 1]
    assert queue.take(0.0, on_the_way=5) == []  # one left, more coming: wait


def test_a_limit_below_max_batch_caps_the_take_and_makes_it_due_sooner():
    queue = BatchQueue(max_batch=8, max_wait_s=10.0)
    for i in range(5):
        queue.add(request(f"c{i}", i, arrived=0.0))
    assert queue.due_in(0.0, on_the_way=9) > 0  # 5 of 8: wait for the photos on their way
    assert queue.due_in(0.0, on_the_way=9, limit=4) == 0.0  # a share of 4 is already there
    assert [r.payload for r in queue.take(0.0, on_the_way=9, limit=4)] == [0, 1, 2, 3]
    assert [r.payload for r in queue.take(0.0, on_the_way=0, limit=99)] == [4]  # never above max_batch


@pytest.mark.parametrize("waiting, on_the_way, share", [
    (30, 0, 8),   # a big burst: half of max_batch each, so both together hold one max_batch of activations
    (5, 25, 8),
    (9, 0, 5),    # the end of a burst: split evenly, so the two workers finish together
    (3, 0, 2),
    (1, 1, 2),    # but not below MIN_SHARE: a batch of 1 on one thread costs more per photo
    (1, 0, 2),
    (0, 0, 2),
])
def test_share_of_work_splits_what_is_in_sight_between_two_workers(waiting, on_the_way, share):
    assert MIN_SHARE == 2
    assert share_of_work(16, 2, waiting, on_the_way) == share


def test_share_of_work_of_a_single_worker_is_max_batch():
    assert share_of_work(16, 1, 3, 0) == 16
    assert share_of_work(16, 3, 100, 0) == 6
    assert share_of_work(2, 2, 9, 0) == 1  # never above max_batch / workers, even below MIN_SHARE


def test_invalid_bounds():
    with pytest.raises(ValueError):
        BatchQueue(max_batch=0, max_wait_s=0.0)
