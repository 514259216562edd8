"""The bot's side of the feedback inbox (:mod:`model.inbox`): async, off the event loop, one download per photo.

Only exists when the operator sets ``FEEDBACK_DIR``; with it unset the bot keeps nothing and shows no
feedback buttons.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from model.inbox import FeedbackRecord, Inbox, chat_hash
from model.live_accuracy import CheckpointScore, LiveAccuracy, per_checkpoint

log = logging.getLogger(__name__)

STALE_TEMP_S = 3600.0  # a temp file this old is a leftover of a killed write, never one in progress


class FeedbackStore:
    """Writes judgements into an :class:`Inbox`; every disk call runs in a thread."""

    def __init__(self, inbox: Inbox, salt: str):
        self.inbox = inbox
        self._salt = salt
        # One lock per photo: two quick presses (or two users) on the same photo download it once.
        self._photo_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._photo_users: Counter[str] = Counter()

    @classmethod
    async def open(cls, directory: str | Path, salt: str = "") -> FeedbackStore:
        """The store for ``directory``; the salt is ``salt`` or the one kept in the folder (made on first use)."""
        inbox = Inbox(directory)

        def prepare() -> str:
            inbox.root.mkdir(parents=True, exist_ok=True)
            removed = inbox.remove_stale_temp_files(STALE_TEMP_S)
            if removed:
                log.warning("feedback: removed %d unfinished file(s) left by an earlier crash", removed)
            return inbox.salt(salt)

        return cls(inbox, await asyncio.to_thread(prepare))

    def chat(self, chat_id: int) -> str:
        return chat_hash(chat_id, self._salt)

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
    ) -> FeedbackRecord:
        """Keep the photo (``fetch_photo`` is awaited only if this photo is not stored yet) and the judgement.

        Telegram and disk errors propagate: the caller tells the user it did not work.
        """
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
        )
        await asyncio.to_thread(self.inbox.add_record, record)
        return record

    async def live_accuracy(self) -> tuple[LiveAccuracy, int, list[CheckpointScore]]:
        """(live accuracy over the latest judgement per photo and chat, photos kept, the same per checkpoint)."""

        def read() -> tuple[LiveAccuracy, int, list[CheckpointScore]]:
            records = self.inbox.records()
            return LiveAccuracy.of(records), self.inbox.photo_count(), per_checkpoint(records)

        return await asyncio.to_thread(read)

    async def forget(self, chat_id: int) -> tuple[int, int]:
        """Delete this chat's judgements and the photos nobody else judged: (records, photos) deleted."""
        return await asyncio.to_thread(self.inbox.forget_chat, self.chat(chat_id))
