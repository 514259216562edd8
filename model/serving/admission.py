"""Admission: whether a request may queue at all, decided at once on the caller's thread (no waiting).

The same rules for every backend (the bot's own scheduler, the cluster gateway, a replica):

- at most ``queue_size`` requests admitted and not yet answered, overall;
- at most ``per_chat_queue`` of them per chat;
- at most ``map_queue_size`` heat maps, and at most a **fair share** of those per chat
  (:attr:`Limits.map_share`: half the map queue, at least one), so one chat that floods /why cannot take
  every map slot: another chat's /why is still admitted.

A refusal is :class:`Busy` (the users get the busy message), or :class:`Stopping` once :meth:`Admission.close`
was called. ``None`` for a limit: no limit (a replica leaves the per-chat limits to the gateway).
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass


class Busy(Exception):
    """Too much work is queued (overall, for this chat, or heat maps); try again later."""


class Stopping(Busy):
    """The service is stopping: the request is not done, and the journal keeps it for the next start."""


class DeadlinePassed(Busy):
    """The caller stopped waiting (its deadline passed, or it hung up): the work was dropped."""


@dataclass(frozen=True)
class Limits:
    queue_size: int | None
    per_chat_queue: int | None
    map_queue_size: int | None

    @property
    def map_share(self) -> int | None:
        """The heat maps one chat may hold at once: half the map queue (at least one)."""
        return None if self.map_queue_size is None else max(1, self.map_queue_size // 2)


class Admission:
    """Counts what is admitted and not yet released, per chat and for heat maps. Thread-safe."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._lock = threading.Lock()
        self._per_chat: Counter = Counter()
        self._maps_per_chat: Counter = Counter()
        self._total = 0
        self._maps = 0
        self._closed = False

    def admit(self, chat_id: Hashable, heat_map: bool = False) -> None:
        """Count one request of ``chat_id``, or raise :class:`Busy` / :class:`Stopping` at once."""
        limits = self.limits
        with self._lock:
            if self._closed:
                raise Stopping("the service is not running")
            if limits.queue_size is not None and self._total >= limits.queue_size:
                raise Busy(f"{self._total} requests queued")
            if limits.per_chat_queue is not None and self._per_chat[chat_id] >= limits.per_chat_queue:
                raise Busy(f"chat {chat_id} has {self._per_chat[chat_id]} requests queued")
            if heat_map and limits.map_queue_size is not None:
                if self._maps >= limits.map_queue_size:
                    raise Busy(f"{self._maps} heat maps queued")
                if self._maps_per_chat[chat_id] >= limits.map_share:
                    raise Busy(f"chat {chat_id} holds its share of the heat-map queue ({limits.map_share})")
            self._per_chat[chat_id] += 1
            self._total += 1
            if heat_map:
                self._maps_per_chat[chat_id] += 1
                self._maps += 1

    def release(self, chat_id: Hashable, heat_map: bool = False) -> None:
        with self._lock:
            self._total -= 1
            _decrement(self._per_chat, chat_id)
            if heat_map:
                self._maps -= 1
                _decrement(self._maps_per_chat, chat_id)

    def close(self) -> None:
        """From now on every request gets :class:`Stopping`."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def queued(self) -> int:
        """Requests admitted and not yet answered."""
        return self._total

    def maps_queued(self) -> int:
        return self._maps


def _decrement(counter: Counter, key: Hashable) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class Ticket:
    """One admitted request, released when the ``with`` block ends (or by :meth:`release`, once)."""

    def __init__(self, admission: Admission, chat_id: Hashable, heat_map: bool):
        admission.admit(chat_id, heat_map)
        self._admission, self.chat_id, self._heat_map = admission, chat_id, heat_map
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.release(self.chat_id, self._heat_map)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
