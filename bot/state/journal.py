"""The journal of accepted requests: every update is written down before Telegram learns it arrived, and
marked done once its answer was sent, so a crash or a restart never leaves a user without an answer.

Where it hooks in (:class:`JournalingQueue`): PTB's updater puts each update it fetched into the
application's update queue and only then confirms it to Telegram, with the next getUpdates' offset (a
webhook answers Telegram's POST after the same put). The queue's ``put`` writes the update to the
journal first. :meth:`bot.app.BotApplication.process_update` marks it done when every handler has
finished with it, unless the handler was cut short by the shutdown (:class:`bot.inference.local.Stopping`).
On start, :meth:`Journal.unfinished` gives what is still open and younger than JOURNAL_MAX_AGE_HOURS; the
application queues those again, before polling, and downloads their files again by ``file_id``.

A duplicate answer can still happen when the process dies after an answer was sent and before its entry
was marked done (the few milliseconds between the two), and a resumed /why re-sends nothing but edits its
coarse map in place (its message id is kept in ``progress``). An update that arrives again from Telegram
(it was not yet confirmed when the process died) is recognised by its ``update_id`` and not run twice.

The poison-pill rule: one update must not crash-loop the bot (a file that gets it OOM-killed, replayed at
every start until the supervisor gives up). An entry is marked ``in_progress`` when a handler starts it
(:meth:`Journal.start`) and unmarked when it ends or is put back by a clean stop; at the next start an
entry still marked was running when the process died, and only such entries are charged a crash (those
still waiting in the queue are not: they cannot have caused it). One charged once is a suspect: the
application runs suspects one at a time (so a second crash charges the culprit alone); one in progress at
:data:`MAX_CRASHES` crashes is set aside (logged by id and kind; its user is told once, see
``bot.app``).

A journal that cannot be written (disk full, a read-only DATA_DIR) makes ``put`` raise
:class:`JournalUnwritable`, a TelegramError: PTB's polling loop then logs it, backs off, and asks for the
same updates again without confirming them, so Telegram keeps them until the journal can take them (a
webhook answers 500 and Telegram redelivers). Nothing is run that was not written down.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from telegram import Update
from telegram.error import TelegramError

from bot.state.store import DB_NAME, add_missing_columns, open_database

log = logging.getLogger(__name__)

MAX_CRASHES = 2  # an update that was in progress at this many crashes is set aside (the poison-pill rule)

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    update_id INTEGER PRIMARY KEY,
    chat_id INTEGER,
    kind TEXT NOT NULL,
    received_at REAL NOT NULL,
    update_json TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    progress INTEGER,
    done_at REAL,
    checkpoint_id TEXT  -- the model that served the chat when it was answered
);
CREATE INDEX IF NOT EXISTS journal_open ON journal (done_at, received_at);
"""
# in_progress: a handler has started it in this run; crashes: runs that died while it was in progress;
# set_aside: closed by the poison-pill rule. Added to journals written before them.
COLUMNS_ADDED = {"journal": {"in_progress": "INTEGER NOT NULL DEFAULT 0", "crashes": "INTEGER NOT NULL DEFAULT 0",
                             "set_aside": "INTEGER NOT NULL DEFAULT 0"}}


def update_kind(update: Update) -> str:
    if update.callback_query is not None:
        return "button"
    message = update.effective_message
    if message is None:
        return "other"
    if message.photo:
        return "photo"
    if message.document is not None:
        return "document"
    if message.text and message.text.startswith("/"):
        return "command"
    return "message"


@dataclass(frozen=True)
class OpenEntry:
    update_id: int
    update_json: str
    attempts: int
    received_at: float
    crashes: int = 0  # crashes it was in progress at: a suspect when 1 (run alone), set aside at MAX_CRASHES
    chat_id: int | None = None
    kind: str = ""


@dataclass(frozen=True)
class Resumption:
    """What a start finds open: the entries to run again, and those set aside by the poison-pill rule."""

    resumed: list[OpenEntry]
    set_aside: list[OpenEntry]


class JournalUnwritable(TelegramError):
    """The journal cannot be written (disk full, read-only): the update is not taken, so it is not confirmed.

    A TelegramError, so that PTB's polling loop logs it, backs off and fetches the same updates again."""


class Journal:
    """The ``journal`` table in DATA_DIR's SQLite file. Calls are short and synchronous (a few hundred µs:
    WAL, no fsync per entry); the event loop runs them in a thread."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_database(self.path, SCHEMA)
        add_missing_columns(self._db, COLUMNS_ADDED)

    @classmethod
    def in_dir(cls, data_dir: Path, clock: Callable[[], float] = time.time) -> Journal:
        return cls(Path(data_dir) / DB_NAME, clock)

    def accept(self, update: Update) -> bool:
        """Write ``update`` down; False if it is known already (Telegram sent it again): do not run it twice."""
        chat = update.effective_chat
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO journal (update_id, chat_id, kind, received_at, update_json) VALUES (?, ?, ?, ?, ?)",
                (update.update_id, chat.id if chat else None, update_kind(update), self.clock(), update.to_json()))
        return cursor.rowcount == 1

    def done(self, update_id: int, checkpoint_id: str | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE journal SET done_at = ?, checkpoint_id = ?, in_progress = 0 WHERE update_id = ?",
                             (self.clock(), checkpoint_id, update_id))

    def start(self, update_id: int) -> None:
        """A handler starts on this update: if the process dies before :meth:`done`, it is charged a crash."""
        with self._lock:
            self._db.execute("UPDATE journal SET in_progress = 1 WHERE update_id = ?", (update_id,))

    def put_back(self, update_id: int) -> None:
        """A clean stop cut this update short: resumed at the next start, and not charged a crash."""
        with self._lock:
            self._db.execute("UPDATE journal SET in_progress = 0 WHERE update_id = ?", (update_id,))

    def set_progress(self, update_id: int, message_id: int) -> None:
        """The message already sent for this request (a /why's coarse map), for a resumed request to edit."""
        with self._lock:
            self._db.execute("UPDATE journal SET progress = ? WHERE update_id = ?", (message_id, update_id))

    def progress(self, update_id: int) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT progress FROM journal WHERE update_id = ?", (update_id,)).fetchone()
        return row[0] if row else None

    def resume(self, max_age_s: float) -> list[OpenEntry]:
        """The entries to run again (:meth:`resume_all`'s ``resumed``)."""
        return self.resume_all(max_age_s).resumed

    def resume_all(self, max_age_s: float) -> Resumption:
        """The unfinished entries to run again, oldest first, each counted as one more attempt; those that
        were in progress when the last run died are charged a crash, and set aside at MAX_CRASHES. Entries
        older than ``max_age_s`` are closed instead. Both are logged (update id and kind, no content)."""
        now = self.clock()
        resumed, set_aside = [], []
        with self._lock, self._db:
            rows = self._db.execute("SELECT update_id, update_json, attempts, received_at, kind, chat_id, in_progress, "
                                    "crashes FROM journal WHERE done_at IS NULL ORDER BY update_id").fetchall()
            for update_id, update_json, attempts, received_at, kind, chat_id, in_progress, crashes in rows:
                crashes += 1 if in_progress else 0
                entry = OpenEntry(update_id, update_json, attempts + 1, received_at, crashes, chat_id, kind)
                if now - received_at > max_age_s:
                    log.warning("journal: not resuming update %d (%s, too old)", update_id, kind)
                    self._db.execute("UPDATE journal SET done_at = ? WHERE update_id = ?", (now, update_id))
                elif crashes >= MAX_CRASHES:
                    log.error("journal: update %d (%s) was in progress at %d crashes; set aside, not resumed",
                              update_id, kind, crashes)
                    self._db.execute("UPDATE journal SET done_at = ?, crashes = ?, set_aside = 1, in_progress = 0 "
                                     "WHERE update_id = ?", (now, crashes, update_id))
                    set_aside.append(entry)
                else:
                    self._db.execute("UPDATE journal SET attempts = attempts + 1, crashes = ?, in_progress = 0 "
                                     "WHERE update_id = ?", (crashes, update_id))
                    resumed.append(entry)
        return Resumption(resumed, set_aside)

    def purge(self, max_age_s: float) -> int:
        """Delete finished entries older than ``max_age_s``; returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM journal WHERE done_at IS NOT NULL AND received_at < ?",
                                      (self.clock() - max_age_s,))
        return cursor.rowcount

    def purge_all_older(self, max_age_s: float) -> int:
        """Delete every entry older than ``max_age_s``, answered or not (RETENTION_DAYS); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM journal WHERE received_at < ?", (self.clock() - max_age_s,)).rowcount

    def forget_chat(self, chat_id: int, keep_update_id: int | None = None) -> int:
        """Delete the chat's entries (but ``keep_update_id``, the /forget being answered); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM journal WHERE chat_id = ? AND update_id IS NOT ?",
                                    (chat_id, keep_update_id)).rowcount

    def open_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM journal WHERE done_at IS NULL").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JournalingQueue(asyncio.Queue):
    """The application's update queue: ``put`` writes an update to the journal before PTB confirms it to
    Telegram, and drops an update the journal already has (sent again after a crash)."""

    def __init__(self) -> None:
        super().__init__()
        self.journal: Journal | None = None  # set once the services have started

    async def put(self, item) -> None:
        if isinstance(item, Update) and self.journal is not None:
            try:
                accepted = await asyncio.to_thread(self.journal.accept, item)
            except sqlite3.Error as error:  # disk full, read-only: do not run (or confirm) what is not written down
                log.error("journal: cannot write update %d (%s); not confirming updates until it can, so Telegram "
                          "sends them again", item.update_id, error)
                raise JournalUnwritable(f"the journal cannot be written: {error}") from None
            if not accepted:
                log.info("journal: update %d arrived again; not running it twice", item.update_id)
                return
        await super().put(item)

    async def put_resumed(self, item: Update) -> None:
        """An update from the journal itself (resumed at start): queued without writing it again."""
        await super().put(item)
