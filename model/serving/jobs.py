"""Heat-map jobs and their queue, as plain bookkeeping (no threads, no torch).

:mod:`model.serving.scheduler` holds the lock; classification requests wait in
:class:`model.serving.batching.BatchQueue`, heat maps here. The most urgent kind runs first: classifications,
then every waiting chat's first map of a /why (the coarse one), then the finer maps. Within a kind, chats take turns.
"""
from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


class JobKind(enum.IntEnum):
    """Lower runs first (classifications run before either)."""

    COARSE_MAP = 1  # the first map a /why sends (whatever its patch size)
    FINE_MAP = 2  # each later, finer map, edited into the same message


@dataclass(eq=False)
class MapJob:
    """One /why: its levels (patch, stride), coarse to fine, computed one level at a time."""

    chat_id: Hashable
    data: bytes
    levels: list[tuple[int, int]]
    emit: Callable[[str, Any], None]  # ("result", LevelResult) or ("error", exception); thread-safe
    served: Any = None  # the model.serving.levels.ServedModel the /why started on (it ends on it too)
    deadline: float | None = None  # the scheduler's clock after which nobody waits (None: no deadline)
    next_level: int = 0
    cancelled: bool = False  # nobody waits for it any more (set from the event loop)
    state: dict = field(default_factory=dict)  # what model.serving.levels keeps between levels (decoded image, hash)

    @property
    def kind(self) -> JobKind:
        return JobKind.COARSE_MAP if self.next_level == 0 else JobKind.FINE_MAP

    @property
    def finished(self) -> bool:
        return self.next_level >= len(self.levels)


class MapQueue:
    """Heat maps waiting for their next level, per kind, with chats taking turns. Not thread-safe by itself."""

    def __init__(self) -> None:
        self._waiting: dict[JobKind, OrderedDict[Hashable, deque[MapJob]]] = {
            JobKind.COARSE_MAP: OrderedDict(), JobKind.FINE_MAP: OrderedDict()}

    def __len__(self) -> int:
        return sum(len(jobs) for chats in self._waiting.values() for jobs in chats.values())

    def add(self, job: MapJob) -> None:
        self._waiting[job.kind].setdefault(job.chat_id, deque()).append(job)

    def take(self, kinds: tuple[JobKind, ...] = (JobKind.COARSE_MAP, JobKind.FINE_MAP)) -> MapJob | None:
        """The next job of the most urgent of ``kinds``: the first chat in line, which then goes to the back."""
        for kind in kinds:
            chats = self._waiting[kind]
            while chats:
                chat_id, jobs = next(iter(chats.items()))
                job = jobs.popleft()
                if jobs:
                    chats.move_to_end(chat_id)
                else:
                    del chats[chat_id]
                if not job.cancelled:
                    return job
        return None

    def drain(self) -> list[MapJob]:
        """Every waiting job (for failing them on shutdown)."""
        jobs = [job for chats in self._waiting.values() for waiting in chats.values() for job in waiting]
        for chats in self._waiting.values():
            chats.clear()
        return jobs
