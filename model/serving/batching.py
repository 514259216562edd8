"""The micro-batching policy: which waiting classification requests run together, and when.

Pure bookkeeping with an explicit ``now`` (no clock, no threads, no torch), so the policy can be tested
exactly; :mod:`model.serving.scheduler` holds the lock and the clock.

- A batch is due when ``max_batch`` requests wait, or when the oldest has waited ``max_wait_s``, or,
  when the caller says how many more requests are on their way (admitted, still downloading or
  decoding), as soon as none are: a photo that arrives alone never waits, and the first batch of a burst
  waits (up to ``max_wait_s``) for the photos being decoded instead of leaving with one or two of them
  and making the rest queue behind a small, slow batch.
- Requests are taken round-robin across chats, so one chat's album of ten cannot push another chat's
  single photo into a later batch.
- With several classification workers running batches side by side, each take is capped by
  :func:`share_of_work`, so the work in sight is split evenly between them and the last batches of a
  burst shrink instead of one worker finishing a big batch alone while the other core idles.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PendingRequest:
    """One request waiting for a batch: whose it is, its input, when it arrived, how to hand back the result."""

    chat_id: Hashable
    payload: Any
    arrived: float
    deliver: Callable[[Any, BaseException | None], None] = field(repr=False)
    model: Any = field(default=None, repr=False)  # what runs it (the engine of the model named for this chat)


class BatchQueue:
    """Waiting requests grouped per chat, in arrival order within each chat. Not thread-safe by itself."""

    def __init__(self, max_batch: int, max_wait_s: float):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._chats: OrderedDict[Hashable, deque[PendingRequest]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, request: PendingRequest) -> None:
        self._chats.setdefault(request.chat_id, deque()).append(request)
        self._count += 1

    def oldest_arrival(self) -> float | None:
        return min((waiting[0].arrived for waiting in self._chats.values()), default=None)

    def due_in(self, now: float, on_the_way: int | None = None, limit: int | None = None) -> float | None:
        """Seconds until a batch is due (0 if due now), or ``None`` when nothing waits.

        ``on_the_way``: requests that will join the queue soon (``None``: unknown, so wait for the bound).
        ``limit``: a smaller batch size for this take (a full batch of that size is due at once).
        """
        oldest = self.oldest_arrival()
        if oldest is None:
            return None
        if self._count >= self._size(limit) or on_the_way == 0:
            return 0.0
        return max(0.0, oldest + self.max_wait_s - now)

    def take(self, now: float, force: bool = False, on_the_way: int | None = None,
             limit: int | None = None) -> list[PendingRequest]:
        """The next batch (at most ``limit``, at most ``max_batch``) if one is due at ``now`` (or anything
        waiting, with ``force``), else ``[]``."""
        due = self.due_in(now, on_the_way, limit)
        if due is None or (due > 0 and not force):
            return []
        size = self._size(limit)
        batch: list[PendingRequest] = []
        while len(batch) < size and self._chats:
            chat_id, waiting = next(iter(self._chats.items()))
            batch.append(waiting.popleft())
            # The chat that just had its turn goes to the back of the line (also across batches).
            self._chats.move_to_end(chat_id)
            if not waiting:
                del self._chats[chat_id]
        self._count -= len(batch)
        return batch

    def _size(self, limit: int | None) -> int:
        return self.max_batch if limit is None else max(1, min(self.max_batch, limit))

    def drain(self) -> list[PendingRequest]:
        """Everything still waiting, oldest chats first (for cancelling on shutdown)."""
        everything = [request for waiting in self._chats.values() for request in waiting]
        self._chats.clear()
        self._count = 0
        return everything


MIN_SHARE = 2  # one thread runs a batch of 1 at a higher per-photo cost than at 2-8 (bench_model.py --threads 1)


def share_of_work(max_batch: int, workers: int, waiting: int, on_the_way: int) -> int:
    """The most one of ``workers`` side-by-side classification workers should take now.

    Never more than ``max_batch / workers`` (rounded up), so the activations of all workers together
    stay those of one ``max_batch`` pass; and never more than an even split of what is in sight
    (waiting + on its way), so the workers finish a burst together: a worker that takes 13 of the last
    14 photos runs them alone on its one core while the other core idles.
    """
    if workers <= 1:
        return max_batch
    per_worker = -(-max_batch // workers)
    even_split = max(MIN_SHARE, -(-(waiting + on_the_way) // workers))
    return max(1, min(per_worker, even_split))
