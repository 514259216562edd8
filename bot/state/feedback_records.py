"""The bot's side of the feedback inbox (:mod:`model.inbox`): async, off the event loop, one download per photo.

Only exists when the operator sets ``FEEDBACK_DIR``; with it unset the bot keeps nothing and shows no
feedback buttons.

Each press that stores a judgement counts against the user's limits (:class:`FeedbackLimits`): so many per
photo and so many per day, so one person cannot fill the disk or outvote others by pressing again and again.
The counts live in memory (a restart forgets them: the limits bound a burst, and the trust rule in
training.trust counts each user once per photo anyway).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from model.inbox import FeedbackRecord, Inbox, chat_hash, user_hash
from model.live_accuracy import CheckpointScore, LiveAccuracy, per_checkpoint

log = logging.getLogger(__name__)

STALE_TEMP_S = 3600.0  # a temp file this old is a leftover of a killed write, never one in progress
DAY_S = 86400.0
PER_PHOTO, PER_DAY = "per_photo", "per_day"  # which limit a press went over (OverLimit.limit)


@dataclass(frozen=True)
class FeedbackLimits:
    per_photo: int = 5  # judgements one user may store for one photo in a day (changing one's mind is fine)
    per_day: int = 200  # judgements one user may store in a day


class OverLimit(Exception):
    """The user has stored as many judgements as :class:`FeedbackLimits` allows (``limit``: PER_PHOTO or PER_DAY)."""

    def __init__(self, limit: str):
        super().__init__(limit)
        self.limit = limit


class PressCounts:
    """Judgements stored per user today, and per (user, photo); all of it dropped when the day (UTC) changes."""

    def __init__(self, limits: FeedbackLimits, clock: Callable[[], float] = time.time):
        self.limits = limits
        self._clock = clock
        self._day = -1
        self._per_user: Counter[str] = Counter()
        self._per_photo: Counter[tuple[str, str]] = Counter()

    def take(self, user: str, photo_id: str) -> None:
        """Count one judgement, or raise :class:`OverLimit` (nothing counted). No await inside: race-free."""
        day = int(self._clock() // DAY_S)
        if day != self._day:
            self._day, self._per_user, self._per_photo = day, Counter(), Counter()
        if self._per_photo[(user, photo_id)] >= self.limits.per_photo:
            raise OverLimit(PER_PHOTO)
        if self._per_user[user] >= self.limits.per_day:
            raise OverLimit(PER_DAY)
        self._per_photo[(user, photo_id)] += 1
        self._per_user[user] += 1

    def give_back(self, user: str, photo_id: str) -> None:
        """Undo :meth:`take` for a judgement that could not be stored."""
        if self._per_photo[(user, photo_id)] > 0:
            self._per_photo[(user, photo_id)] -= 1
        if self._per_user[user] > 0:
            self._per_user[user] -= 1


class FeedbackStore:
    """Writes judgements into an :class:`Inbox`; every disk call runs in a thread."""

    def __init__(self, inbox: Inbox, salt: str, limits: FeedbackLimits = FeedbackLimits(),
                 clock: Callable[[], float] = time.time):
        self.inbox = inbox
        self._salt = salt
        self.presses = PressCounts(limits, clock)
        # One lock per photo: two quick presses (or two users) on the same photo download it once.
        self._photo_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._photo_users: Counter[str] = Counter()

    @classmethod
    async def open(cls, directory: str | Path, salt: str = "", limits: FeedbackLimits = FeedbackLimits(),
                   clock: Callable[[], float] = time.time) -> FeedbackStore:
        """The store for ``directory``; the salt is ``salt`` or the one kept in the folder (made on first use).
        Records of the older flat layout are moved into their chat's folder here, once."""
        inbox = Inbox(directory)

        def prepare() -> str:
            inbox.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            removed = inbox.remove_stale_temp_files(STALE_TEMP_S)
            if removed:
                log.warning("feedback: removed %d unfinished file(s) left by an earlier crash", removed)
            moved = inbox.migrate_flat_records()
            if moved:
                log.info("feedback: moved %d record(s) of the older flat layout into per-chat folders", moved)
            return inbox.salt(salt)

        return cls(inbox, await asyncio.to_thread(prepare), limits, clock)

    def chat(self, chat_id: int) -> str:
        return chat_hash(chat_id, self._salt)

    def user(self, user_id: int) -> str:
        return user_hash(user_id, self._salt)

    async def record(
        self,
        *,
        photo_id: str,
        fetch_photo: Callable[[], Awaitable[bytes]],
        predicted: str,
        confidence: float,
        label: str,
        checkpoint_id: str,
        chat_id: int,
        user_id: int,
    ) -> FeedbackRecord:
        """Keep the photo (``fetch_photo`` is awaited only if this photo is not stored yet) and the judgement.

        Raises :class:`OverLimit` (nothing stored) when the user is over a limit. Telegram and disk errors
        propagate (and the press is not counted): the caller tells the user it did not work.
        """
        user = self.user(user_id)
        self.presses.take(user, photo_id)
        try:
            return await self._store(photo_id, fetch_photo, predicted, confidence, label, checkpoint_id, chat_id, user)
        except BaseException:
            self.presses.give_back(user, photo_id)
            raise

    async def _store(self, photo_id: str, fetch_photo: Callable[[], Awaitable[bytes]], predicted: str,
                     confidence: float, label: str, checkpoint_id: str, chat_id: int, user: str) -> FeedbackRecord:
        self._photo_users[photo_id] += 1
        try:
            async with self._photo_locks[photo_id]:
                path = await asyncio.to_thread(self.inbox.photo_path, photo_id)
                if path is None:
                    data = await fetch_photo()
                    path = await asyncio.to_thread(self.inbox.add_photo, photo_id, data)
        finally:
            self._photo_users[photo_id] -= 1
            if not self._photo_users[photo_id]:  # nobody waits on this photo: drop its lock, keep memory flat
                del self._photo_users[photo_id], self._photo_locks[photo_id]
        record = FeedbackRecord(
            photo_id=photo_id,
            photo_file=path.relative_to(self.inbox.root).as_posix(),
            predicted=predicted,
            confidence=round(float(confidence), 4),
            label=label,
            checkpoint_id=checkpoint_id,
            chat=self.chat(chat_id),
            user=user,
        )
        await asyncio.to_thread(self.inbox.add_record, record)
        return record

    async def live_accuracy(self) -> tuple[LiveAccuracy, int, list[CheckpointScore]]:
        """(live accuracy over the latest judgement per photo and chat, photos kept, the same per checkpoint)."""

        def read() -> tuple[LiveAccuracy, int, list[CheckpointScore]]:
            records = self.inbox.records()
            return LiveAccuracy.of(records), self.inbox.photo_count(), per_checkpoint(records)

        return await asyncio.to_thread(read)

    async def forget(self, chat_id: int, user_id: int | None = None) -> tuple[int, int]:
        """Delete this chat's judgements (only those of ``user_id``, when given) and the photos nobody else
        judged: (records, photos) deleted."""
        if user_id is None:
            return await asyncio.to_thread(self.inbox.forget_chat, self.chat(chat_id))
        return await asyncio.to_thread(self.inbox.forget_user, self.chat(chat_id), self.user(user_id))
