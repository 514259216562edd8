"""The retention period (RETENTION_DAYS): everything the bot keeps about users is deleted at that age.

That is the photo store (each chat's last photo ``file_id``, the photos' button keys and the answers given
for them), the journal of accepted requests (answered or not), and the feedback records with the photos
no remaining record needs (and those photos' links in training exports and their reviews: model.inbox).
Feedback records are judged by the time in their file names, so the purge reads none of them.
:class:`bot.app.BotApplication` runs :func:`purge_old_state` in a thread (never on the event loop) once at
start, before it serves anyone, and then hourly.
/privacy tells users the period; /forget deletes a chat's state at once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.state.journal import Journal
from bot.state.store import PhotoStore
from model.inbox import Inbox

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True)
class Purged:
    store_rows: int
    journal_entries: int
    feedback_records: int
    feedback_photos: int

    @property
    def anything(self) -> bool:
        return any((self.store_rows, self.journal_entries, self.feedback_records, self.feedback_photos))


def purge_old_state(store: PhotoStore, journal: Journal, inbox: Inbox | None, retention_days: float,
                    clock: Callable[[], float]) -> Purged:
    """Delete what is older than ``retention_days`` by ``clock`` (seconds since the epoch). Blocks on disk."""
    max_age_s = retention_days * DAY_S
    records = photos = 0
    if inbox is not None:
        records, photos = inbox.purge_older_than(clock() - max_age_s)
    purged = Purged(store.purge(max_age_s), journal.purge_all_older(max_age_s), records, photos)
    if purged.anything:
        log.info("retention: deleted what was older than %g days: %d photo-store rows, %d journal entries, "
                 "%d feedback records, %d feedback photos", retention_days, purged.store_rows, purged.journal_entries,
                 purged.feedback_records, purged.feedback_photos)
    return purged
