"""The feedback inbox: photos users judged and what they said, on disk, shared by the bot and training.

Layout under the inbox folder (``FEEDBACK_DIR``)::

    photos/<file_unique_id>.<jpg|png|webp|img>   each photo once, however often it is judged
    records/<chat>/<time>-<random>-<user>-<photo>.json   one judgement per file (:class:`FeedbackRecord`;
                                                 the folder and name index it: :mod:`model.inbox_names`)
    salt                                         the secret that turns chat and user ids into hashes
    reviews.json                                 an admin's labels (training.trust)
    exports.json                                 the folders ``training.feedback export`` linked photos into

Every file appears with ``os.replace`` after its bytes are fsynced, so a reader (training, a report) sees
either the whole file or nothing, even while the bot writes or after it was killed mid-write. Unfinished
files are hidden (``.<name>.<random>.tmp``) and every reader here skips them. Files are 0600: only the
bot's user (and training, run as it) reads them. Records of the older flat layout (``records/<time>-<random>
.json``) are still read, and :meth:`Inbox.migrate_flat_records` moves them into their chat's folder.

Deleting a photo (/forget, the retention period) also deletes its hard links in the exports and its review.

This module knows nothing of Telegram or of training: plain files in, plain records out.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .export_manifest import fsync_dir
from .inbox_exports import drop_reviews, register_export, unlink_exported
from .inbox_names import NO_USER, parse_record_name, record_file_name, time_epoch

log = logging.getLogger(__name__)

FORMAT = "product-id-feedback"
FORMAT_VERSION = 1
NONE_OF_THESE = "none_of_these"  # the user's label when the photo shows none of the known classes
TEMP_SUFFIX = ".tmp"
FILE_MODE, FOLDER_MODE = 0o600, 0o700
# Telegram's file_unique_id is URL-safe base64; anything else must never become part of a path.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_IMAGE_SUFFIXES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"RIFF", ".webp"))


class InboxError(ValueError):
    """A record or photo id that cannot be stored (the message says which)."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One user's judgement of one answer.

    ``label`` is the class the user chose (the predicted one for "Right"), or :data:`NONE_OF_THESE`;
    ``chat`` is the salted hash of the chat id (:func:`chat_hash`), never the id itself; ``user`` the salted
    hash of the user who pressed (:func:`user_hash`), empty in records made before it was kept.
    """

    photo_id: str  # Telegram's file_unique_id of the photo the answer was about
    photo_file: str  # the photo's path relative to the inbox ("photos/<id>.jpg")
    predicted: str
    confidence: float
    label: str
    checkpoint_id: str
    chat: str
    time: str = field(default_factory=lambda: utc_now())
    format: str = FORMAT
    version: int = FORMAT_VERSION
    user: str = ""  # last, so records built by position (older code, tests) keep their meaning

    @property
    def right(self) -> bool:
        return self.label == self.predicted

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> FeedbackRecord:
        if data.get("format") != FORMAT:
            raise InboxError(f"not a {FORMAT} record")
        return cls(
            photo_id=str(data["photo_id"]),
            photo_file=str(data["photo_file"]),
            predicted=str(data["predicted"]),
            confidence=float(data["confidence"]),
            label=str(data["label"]),
            checkpoint_id=str(data["checkpoint_id"]),
            chat=str(data["chat"]),
            user=str(data.get("user") or ""),
            time=str(data["time"]),
            version=int(data.get("version", FORMAT_VERSION)),
        )


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_epoch(record: FeedbackRecord) -> float | None:
    """When ``record`` was made, in seconds since the epoch (its ``time`` is UTC ISO 8601); ``None``, logged,
    for a time in another format (never raises: one odd record must not stop the retention purge)."""
    return time_epoch(record.time)


def chat_hash(chat_id: int, salt: str) -> str:
    """The chat id as a keyed hash: the same chat always gives the same value, which nobody without the
    salt can turn back into the id (chat ids are small numbers, so a plain hash could be brute-forced)."""
    return hmac.new(salt.encode(), str(int(chat_id)).encode(), hashlib.sha256).hexdigest()[:16]


def user_hash(user_id: int, salt: str) -> str:
    """The user id as a keyed hash, like :func:`chat_hash` but never equal to the hash of their private chat
    (whose id is the same number), so the two cannot be matched up by value."""
    return hmac.new(salt.encode(), f"user:{int(user_id)}".encode(), hashlib.sha256).hexdigest()[:16]


def image_suffix(data: bytes) -> str:
    """The file suffix for photo bytes (by their magic number; training decodes by content anyway)."""
    for magic, suffix in _IMAGE_SUFFIXES:
        if data.startswith(magic):
            return suffix
    return ".img"


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(TEMP_SUFFIX)


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False, mode: int = FILE_MODE) -> bool:
    """Write ``data`` to ``path`` so that nobody ever sees a partial file: temp file, fsync, rename, fsync dir.

    With ``exclusive``, an existing ``path`` is kept (``os.link`` fails instead of replacing) and ``False``
    is returned. A crash before the rename leaves only a hidden temp file, which readers skip.
    """
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        if exclusive:
            try:
                os.link(temp, path)  # atomic, and never overwrites what another writer put there first
            except FileExistsError:
                return False
        else:
            os.replace(temp, path)
        fsync_dir(path.parent)
        return True
    finally:
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Entry:
    """One record file as its name (or, for an old or odd name, its content) tells it."""

    path: Path
    user: str
    photo_id: str
    epoch: float | None


class Inbox:
    """The inbox folder. Methods block on disk I/O: the bot calls them with ``asyncio.to_thread``.

    Record files never change once written, so each is parsed once per Inbox (/stats reads only new ones)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.photos_dir = self.root / "photos"
        self.records_dir = self.root / "records"
        self.salt_path = self.root / "salt"
        self._parsed: dict[Path, FeedbackRecord] = {}

    @staticmethod
    def looks_like_inbox(directory: str | Path) -> bool:
        return (Path(directory) / "records").is_dir()

    # ---- writing ---------------------------------------------------------------------------------
    def salt(self, given: str | None = None) -> str:
        """``given`` if set, else the salt stored here, created (randomly, once, race-free) on first use."""
        if given:
            return given
        if not self.salt_path.exists():
            atomic_write(self.salt_path, secrets.token_hex(32).encode(), exclusive=True, mode=0o600)
        return self.salt_path.read_text().strip()

    def photo_path(self, photo_id: str) -> Path | None:
        """The stored photo of ``photo_id``, if there is one."""
        _check_id(photo_id)
        if not self.photos_dir.is_dir():
            return None
        return next((p for p in self.photos_dir.glob(f"{photo_id}.*") if not is_temp(p)), None)

    def add_photo(self, photo_id: str, data: bytes) -> Path:
        """Store the photo once; a second call with the same id keeps the first file."""
        existing = self.photo_path(photo_id)
        if existing is not None:
            return existing
        path = self.photos_dir / f"{photo_id}{image_suffix(data)}"
        atomic_write(path, data, exclusive=True)
        return path

    def chat_dir(self, chat: str) -> Path:
        _check_id(chat)
        return self.records_dir / chat

    def add_record(self, record: FeedbackRecord) -> Path:
        """Write one record as its own file in its chat's folder (names sort by time; see model.inbox_names)."""
        _check_id(record.photo_id)
        path = self.chat_dir(record.chat) / record_file_name(record.time, secrets.token_hex(4), record.user, record.photo_id)
        atomic_write(path, record.to_json().encode())
        return path

    def migrate_flat_records(self) -> int:
        """Move records of the older flat layout into their chat's folder (each an atomic rename); returns how
        many. A damaged one stays where it is (readers skip it, as before)."""
        moved = 0
        for path in self._flat_files():
            record = self._read(path)
            if record is None:
                continue
            target = self.chat_dir(record.chat) / record_file_name(record.time, secrets.token_hex(4), record.user,
                                                                   record.photo_id)
            target.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            os.chmod(path, FILE_MODE)
            os.replace(path, target)
            self._parsed.pop(path, None)
            moved += 1
        if moved:
            for folder in {self.records_dir, *(p for p in self.records_dir.iterdir() if p.is_dir())}:
                fsync_dir(folder)
        return moved

    # ---- deleting --------------------------------------------------------------------------------
    def forget_chat(self, chat: str) -> tuple[int, int]:
        """Delete every record of the chat hash ``chat`` (one folder: nothing else is read) and the photos no
        other record needs. Returns (records deleted, photos deleted)."""
        return self._delete(list(self._entries(chat)))

    def forget_user(self, chat: str, user: str) -> tuple[int, int]:
        """Delete the records the user hash ``user`` made in the chat ``chat`` (/forget of one group member)."""
        return self._delete([entry for entry in self._entries(chat) if entry.user == user])

    def purge_older_than(self, cutoff: float) -> tuple[int, int]:
        """Delete the records made before ``cutoff`` (seconds since the epoch; by their names) and the photos no
        remaining record needs (the retention period). Returns (records deleted, photos deleted)."""
        return self._delete([entry for entry in self._entries() if entry.epoch is not None and entry.epoch < cutoff])

    def _delete(self, doomed: list[_Entry]) -> tuple[int, int]:
        for entry in doomed:
            entry.path.unlink(missing_ok=True)
            self._parsed.pop(entry.path, None)
        kept = {entry.photo_id for entry in self._entries()} if doomed else set()
        gone = []
        for photo_id in {entry.photo_id for entry in doomed} - kept:
            photo = self.photo_path(photo_id)
            if photo is not None:
                photo.unlink(missing_ok=True)
                unlink_exported(self.root, photo.name)
                gone.append(photo_id)
        drop_reviews(self.root, gone)
        return len(doomed), len(gone)

    def register_export(self, folder: Path) -> None:
        """Remember a folder ``training.feedback export`` linked photos into, so deleting a photo reaches it too."""
        register_export(self.root, folder)

    def remove_stale_temp_files(self, older_than_s: float) -> int:
        """Delete unfinished files older than ``older_than_s`` (leftovers of a killed writer); returns how many."""
        now, removed = time.time(), 0
        folders = [self.root, self.photos_dir, self.records_dir]
        if self.records_dir.is_dir():
            folders += [path for path in self.records_dir.iterdir() if path.is_dir()]
        for directory in folders:
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.is_file() and path.name.endswith(TEMP_SUFFIX) and path.name.startswith("."):
                    try:
                        if now - path.stat().st_mtime > older_than_s:
                            path.unlink()
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    # ---- reading ---------------------------------------------------------------------------------
    def _flat_files(self) -> list[Path]:
        if not self.records_dir.is_dir():
            return []
        return [p for p in self.records_dir.iterdir() if p.is_file() and not is_temp(p) and p.suffix == ".json"]

    def _files(self, chat: str | None = None) -> list[Path]:
        """Record files: the old flat ones, then those of ``chat``'s folder (every chat's when ``None``)."""
        files = self._flat_files()
        if chat is not None:
            folders = [self.chat_dir(chat)]
        else:
            folders = [p for p in self.records_dir.iterdir() if p.is_dir()] if self.records_dir.is_dir() else []
        for folder in folders:
            if folder.is_dir():
                files += [p for p in folder.iterdir() if p.is_file() and not is_temp(p) and p.suffix == ".json"]
        return sorted(files, key=lambda p: p.name)  # names start with the time: oldest first

    def _entries(self, chat: str | None = None) -> Iterator[_Entry]:
        for path in self._files(chat):
            name = parse_record_name(path.name) if path.parent != self.records_dir else None
            if name is not None:
                yield _Entry(path, name.user, name.photo_id, name.epoch)
                continue
            record = self._read(path)  # an old flat record, or a name of another shape
            if record is not None and (chat is None or record.chat == chat):
                yield _Entry(path, record.user or NO_USER, record.photo_id, record_epoch(record))

    def _read(self, path: Path) -> FeedbackRecord | None:
        if path in self._parsed:
            return self._parsed[path]
        try:
            record = FeedbackRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:  # deleted (forget_chat) between listing and reading
            return None
        except (ValueError, KeyError, TypeError, AttributeError, InboxError) as error:
            log.warning("skipped feedback record %s: %s", path, error)
            return None
        self._parsed[path] = record
        return record

    def records(self) -> list[FeedbackRecord]:
        """Every complete record, oldest first; temp files and damaged files are skipped."""
        files = self._files()
        listed = set(files)
        self._parsed = {path: record for path, record in self._parsed.items() if path in listed}
        return [record for record in map(self._read, files) if record is not None]

    def photo_count(self) -> int:
        if not self.photos_dir.is_dir():
            return 0
        return sum(1 for p in self.photos_dir.iterdir() if not is_temp(p))

def _check_id(photo_id: str) -> None:
    if not _SAFE_ID.fullmatch(photo_id):
        raise InboxError(f"unusable photo id {photo_id!r}")
