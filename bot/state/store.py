"""What the bot remembers across restarts, in one SQLite file under DATA_DIR.

- the last photo of each chat (its Telegram ``file_id``, never the bytes), for a bare /why;
- the answer given for each photo (for feedback records);
- the photos behind the buttons: ``callback_data`` must stay under 64 bytes, so a button carries a short
  key (:mod:`bot.handlers.buttons`: an HMAC over the chat and the photo) and the ``file_id`` (often longer than 64
  bytes) lives here, under (chat, key): a press finds only its own chat's photos.

Rows older than RETENTION_DAYS are deleted by :meth:`PhotoStore.purge` (bot.state.retention), and /forget
deletes a chat's rows at once.

Calls are short and synchronous; handlers run them with ``asyncio.to_thread`` so a slow disk never
stalls the event loop.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.handlers.buttons import ButtonKeys, load_secret

SCHEMA = """
CREATE TABLE IF NOT EXISTS last_photo (
    chat_id INTEGER PRIMARY KEY,
    file_id TEXT NOT NULL,
    file_unique_id TEXT NOT NULL,
    message_id INTEGER,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answer (
    chat_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    checkpoint_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, key)
);
CREATE TABLE IF NOT EXISTS photo_key (
    chat_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    file_id TEXT NOT NULL,
    file_unique_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (chat_id, key)
);
"""
# Files written when a key was sha256(file_unique_id) alone, looked up without the chat: those rows are
# dropped (their buttons could be pressed from any chat; they now answer "expired"), the tables made anew.
KEYED_BY_CHAT = ("photo_key", "answer")


@dataclass(frozen=True)
class StoredPhoto:
    file_id: str
    file_unique_id: str
    message_id: int | None = None


@dataclass(frozen=True)
class StoredAnswer:
    label: str
    confidence: float
    checkpoint_id: str


def drop_rows_not_keyed_by_chat(db: sqlite3.Connection) -> None:
    """The schema upgrade: an old ``photo_key``/``answer`` table (primary key without the chat) is dropped."""
    for table in KEYED_BY_CHAT:
        primary = {row[1] for row in db.execute(f"PRAGMA table_info({table})") if row[5]}
        if primary and "chat_id" not in primary:
            db.execute(f"DROP TABLE {table}")


DB_NAME = "bot.sqlite3"  # in DATA_DIR: the photo store and the journal (bot.state.journal) share the file


def add_missing_columns(db: sqlite3.Connection, columns: dict[str, dict[str, str]]) -> None:
    """Columns added to a table after files were written without them (NULL in the old rows)."""
    for table, wanted in columns.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in wanted.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def open_database(path: Path, schema: str, upgrade: Callable[[sqlite3.Connection], None] | None = None) -> sqlite3.Connection:
    """A connection in autocommit mode, usable from any thread (callers hold their own lock), with ``schema``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a crash of the bot loses nothing; a power cut may lose the last few records (a bare /why
    # then asks for a photo again, a request is not resumed). FULL would fsync at every answer.
    db.execute("PRAGMA synchronous=NORMAL")
    if upgrade is not None:
        upgrade(db)
    db.executescript(schema)
    return db


class PhotoStore:
    """The photo store; button keys come from ``keys`` (bot.handlers.buttons), so a row is found only by its own chat."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time, keys: ButtonKeys | None = None):
        self.path = Path(path)
        self.clock = clock
        self.keys = keys if keys is not None else ButtonKeys(load_secret(self.path.parent))
        self._lock = threading.Lock()
        self._db = open_database(self.path, SCHEMA, drop_rows_not_keyed_by_chat)

    @classmethod
    def in_dir(cls, data_dir: Path, clock: Callable[[], float] = time.time, button_secret: str = "") -> PhotoStore:
        """The store in ``data_dir``; its button keys under BUTTON_SECRET, or the secret kept in ``data_dir``."""
        return cls(Path(data_dir) / DB_NAME, clock, ButtonKeys(load_secret(data_dir, button_secret)))

    def key(self, chat_id: int, photo: StoredPhoto) -> str:
        return self.keys.key(chat_id, photo.file_unique_id)

    def remember(self, chat_id: int, photo: StoredPhoto, answer: StoredAnswer | None = None) -> str:
        """Make ``photo`` the chat's latest (with the ``answer`` given for it) and return its button key.

        An earlier message of the chat stays behind a later one that was remembered first (an album's photos
        finish in any order), so a bare /why explains the photo the user sent last."""
        key = self.key(chat_id, photo)
        now = self.clock()
        with self._lock, self._db:  # one transaction
            self._db.execute(
                "INSERT INTO last_photo VALUES (?, ?, ?, ?, ?) ON CONFLICT(chat_id) DO UPDATE SET "
                "file_id=excluded.file_id, file_unique_id=excluded.file_unique_id, "
                "message_id=excluded.message_id, updated_at=excluded.updated_at "
                "WHERE excluded.message_id IS NULL OR last_photo.message_id IS NULL "
                "OR excluded.message_id >= last_photo.message_id",
                (chat_id, photo.file_id, photo.file_unique_id, photo.message_id, now),
            )
            # Keyed by (chat, key): a row is only ever replaced by its own chat, never moved to another one.
            self._db.execute("INSERT OR REPLACE INTO photo_key VALUES (?, ?, ?, ?, ?)",
                             (chat_id, key, photo.file_id, photo.file_unique_id, now))
            if answer is not None:
                self._db.execute("INSERT OR REPLACE INTO answer VALUES (?, ?, ?, ?, ?)",
                                 (chat_id, key, answer.label, answer.confidence, answer.checkpoint_id))
        return key

    def keep_key(self, chat_id: int, photo: StoredPhoto) -> str:
        """Make ``photo`` findable by its button key in this chat (a /why of a photo the bot never classified)."""
        key = self.key(chat_id, photo)
        with self._lock:
            self._db.execute("INSERT INTO photo_key VALUES (?, ?, ?, ?, ?) ON CONFLICT(chat_id, key) DO NOTHING",
                             (chat_id, key, photo.file_id, photo.file_unique_id, self.clock()))
        return key

    def answer(self, chat_id: int, key: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute("SELECT label, confidence, checkpoint_id FROM answer WHERE chat_id = ? AND key = ?",
                                   (chat_id, key)).fetchone()
        return StoredAnswer(*row) if row else None

    def last_photo(self, chat_id: int) -> StoredPhoto | None:
        with self._lock:
            row = self._db.execute("SELECT file_id, file_unique_id, message_id FROM last_photo WHERE chat_id = ?",
                                   (chat_id,)).fetchone()
        return StoredPhoto(*row) if row else None

    def by_key(self, chat_id: int, key: str) -> StoredPhoto | None:
        """The photo behind a button pressed in ``chat_id``: only a row of that chat whose key this bot made for
        it (``None`` for another chat's key, a forged one, or one that has expired)."""
        with self._lock:
            row = self._db.execute("SELECT file_id, file_unique_id FROM photo_key WHERE chat_id = ? AND key = ?",
                                   (chat_id, key)).fetchone()
        if row is None or not self.keys.matches(key, chat_id, row[1]):
            return None
        return StoredPhoto(*row)

    def forget_chat(self, chat_id: int) -> int:
        """Delete the chat's last photo, its photos' keys and the answers given for them; returns the rows."""
        with self._lock, self._db:
            removed = self._db.execute("DELETE FROM answer WHERE chat_id = ?", (chat_id,)).rowcount
            removed += self._db.execute("DELETE FROM photo_key WHERE chat_id = ?", (chat_id,)).rowcount
            removed += self._db.execute("DELETE FROM last_photo WHERE chat_id = ?", (chat_id,)).rowcount
        return removed

    def purge(self, max_age_s: float) -> int:
        """Delete every row older than ``max_age_s`` (answers go with their photo's key); returns the rows."""
        cutoff = self.clock() - max_age_s
        with self._lock, self._db:
            removed = self._db.execute("DELETE FROM last_photo WHERE updated_at < ?", (cutoff,)).rowcount
            removed += self._db.execute("DELETE FROM photo_key WHERE created_at < ?", (cutoff,)).rowcount
            removed += self._db.execute("DELETE FROM answer WHERE NOT EXISTS (SELECT 1 FROM photo_key "
                                        "WHERE photo_key.chat_id = answer.chat_id AND photo_key.key = answer.key)").rowcount
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
