"""What the bot remembers across restarts, in one SQLite file under DATA_DIR.

- the last photo of each chat (its Telegram ``file_id``, never the bytes), for a bare /why;
- the answer given for each photo (for feedback records);
- the photos behind "Why?" buttons: ``callback_data`` must stay under 64 bytes, so the button carries
  a short key and the ``file_id`` (often longer than 64 bytes) lives here, with the chat it came from
  (for /forget).

Rows older than RETENTION_DAYS are deleted by :meth:`PhotoStore.purge` (bot.retention), and /forget
deletes a chat's rows at once.

Calls are short and synchronous; handlers run them with ``asyncio.to_thread`` so a slow disk never
stalls the event loop.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS last_photo (
    chat_id INTEGER PRIMARY KEY,
    file_id TEXT NOT NULL,
    file_unique_id TEXT NOT NULL,
    message_id INTEGER,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answer (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    checkpoint_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS photo_key (
    key TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    file_unique_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    chat_id INTEGER
);
"""
# Files written before photo_key had a chat: the column is added (NULL for old rows, which the retention
# purge removes in time).
COLUMNS_ADDED = {"photo_key": {"chat_id": "INTEGER"}}


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


def photo_key(file_unique_id: str) -> str:
    """A short, stable key for a photo (12 hex characters of a hash; fits any callback_data prefix)."""
    return hashlib.sha256(file_unique_id.encode()).hexdigest()[:12]


DB_NAME = "bot.sqlite3"  # in DATA_DIR: the photo store and the journal (bot.journal) share the file


def add_missing_columns(db: sqlite3.Connection, columns: dict[str, dict[str, str]]) -> None:
    for table, wanted in columns.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in wanted.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode, usable from any thread (callers hold their own lock), with ``schema``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a crash of the bot loses nothing; a power cut may lose the last few records (a bare /why
    # then asks for a photo again, a request is not resumed). FULL would fsync at every answer.
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


class PhotoStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_database(self.path, SCHEMA)
        add_missing_columns(self._db, COLUMNS_ADDED)

    @classmethod
    def in_dir(cls, data_dir: Path, clock: Callable[[], float] = time.time) -> PhotoStore:
        return cls(Path(data_dir) / DB_NAME, clock)

    def remember(self, chat_id: int, photo: StoredPhoto, answer: StoredAnswer | None = None) -> str:
        """Make ``photo`` the chat's latest (with the ``answer`` given for it) and return its button key.

        An earlier message of the chat stays behind a later one that was remembered first (an album's photos
        finish in any order), so a bare /why explains the photo the user sent last."""
        key = photo_key(photo.file_unique_id)
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
            self._db.execute("INSERT OR REPLACE INTO photo_key VALUES (?, ?, ?, ?, ?)",
                             (key, photo.file_id, photo.file_unique_id, now, chat_id))
            if answer is not None:
                self._insert_answer(key, answer)
        return key

    def keep_key(self, chat_id: int, photo: StoredPhoto) -> str:
        """Make ``photo`` findable by its button key (a /why of a photo the bot never classified)."""
        key = photo_key(photo.file_unique_id)
        with self._lock:
            self._db.execute("INSERT INTO photo_key VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                             (key, photo.file_id, photo.file_unique_id, self.clock(), chat_id))
        return key

    def _insert_answer(self, key: str, answer: StoredAnswer) -> None:
        self._db.execute("INSERT OR REPLACE INTO answer VALUES (?, ?, ?, ?)",
                         (key, answer.label, answer.confidence, answer.checkpoint_id))

    def answer(self, key: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute("SELECT label, confidence, checkpoint_id FROM answer WHERE key = ?", (key,)).fetchone()
        return StoredAnswer(*row) if row else None

    def last_photo(self, chat_id: int) -> StoredPhoto | None:
        with self._lock:
            row = self._db.execute("SELECT file_id, file_unique_id, message_id FROM last_photo WHERE chat_id = ?",
                                   (chat_id,)).fetchone()
        return StoredPhoto(*row) if row else None

    def by_key(self, key: str) -> StoredPhoto | None:
        with self._lock:
            row = self._db.execute("SELECT file_id, file_unique_id FROM photo_key WHERE key = ?", (key,)).fetchone()
        return StoredPhoto(*row) if row else None

    def forget_chat(self, chat_id: int) -> int:
        """Delete the chat's last photo, its photos' keys and the answers given for them; returns the rows."""
        with self._lock, self._db:
            removed = self._db.execute("DELETE FROM answer WHERE key IN (SELECT key FROM photo_key WHERE chat_id = ?)",
                                       (chat_id,)).rowcount
            removed += self._db.execute("DELETE FROM photo_key WHERE chat_id = ?", (chat_id,)).rowcount
            removed += self._db.execute("DELETE FROM last_photo WHERE chat_id = ?", (chat_id,)).rowcount
        return removed

    def purge(self, max_age_s: float) -> int:
        """Delete every row older than ``max_age_s`` (answers go with their photo's key); returns the rows."""
        cutoff = self.clock() - max_age_s
        with self._lock, self._db:
            removed = self._db.execute("DELETE FROM last_photo WHERE updated_at < ?", (cutoff,)).rowcount
            removed += self._db.execute("DELETE FROM photo_key WHERE created_at < ?", (cutoff,)).rowcount
            removed += self._db.execute("DELETE FROM answer WHERE key NOT IN (SELECT key FROM photo_key)").rowcount
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
