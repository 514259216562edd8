"""The feedback inbox: photos users judged and what they said, on disk, shared by the bot and training.

Layout under the inbox folder (``FEEDBACK_DIR``)::

    photos/<file_unique_id>.<jpg|png|webp|img>   each photo once, however often it is judged
    records/<time>-<random>.json                 one judgement per file (see :class:`FeedbackRecord`)
    salt                                         the secret that turns chat ids into hashes

Every file appears with ``os.replace`` after its bytes are fsynced, so a reader (training, a report) sees
either the whole file or nothing, even while the bot writes or after it was killed mid-write. Unfinished
files are hidden (``.<name>.<random>.tmp``) and every reader here skips them.

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "product-id-feedback"
FORMAT_VERSION = 1
NONE_OF_THESE = "none_of_these"  # the user's label when the photo shows none of the known classes
TEMP_SUFFIX = ".tmp"
# Telegram's file_unique_id is URL-safe base64; anything else must never become part of a path.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_IMAGE_SUFFIXES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"RIFF", ".webp"))


class InboxError(ValueError):
    """A record or photo id that cannot be stored (the message says which)."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One user's judgement of one answer.

    ``label`` is the class the user chose (the predicted one for "Right"), or :data:`NONE_OF_THESE`;
    ``chat`` is the salted hash of the chat id (:func:`chat_hash`), never the id itself.
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
            time=str(data["time"]),
            version=int(data.get("version", FORMAT_VERSION)),
        )


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_epoch(record: FeedbackRecord) -> float:
    """When ``record`` was made, in seconds since the epoch (its ``time`` is UTC ISO 8601)."""
    return datetime.strptime(record.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def chat_hash(chat_id: int, salt: str) -> str:
    """The chat id as a keyed hash: the same chat always gives the same value, which nobody without the
    salt can turn back into the id (chat ids are small numbers, so a plain hash could be brute-forced)."""
    return hmac.new(salt.encode(), str(int(chat_id)).encode(), hashlib.sha256).hexdigest()[:16]


def image_suffix(data: bytes) -> str:
    """The file suffix for photo bytes (by their magic number; training decodes by content anyway)."""
    for magic, suffix in _IMAGE_SUFFIXES:
        if data.startswith(magic):
            return suffix
    return ".img"


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(TEMP_SUFFIX)


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False, mode: int = 0o644) -> bool:
    """Write ``data`` to ``path`` so that nobody ever sees a partial file: temp file, fsync, rename, fsync dir.

    With ``exclusive``, an existing ``path`` is kept (``os.link`` fails instead of replacing) and ``False``
    is returned. A crash before the rename leaves only a hidden temp file, which readers skip.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
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
        _fsync_dir(path.parent)
        return True
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (the directory entry), where the OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Inbox:
    """The inbox folder. Methods block on disk I/O: the bot calls them with ``asyncio.to_thread``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.photos_dir = self.root / "photos"
        self.records_dir = self.root / "records"
        self.salt_path = self.root / "salt"

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

    def add_record(self, record: FeedbackRecord) -> Path:
        """Write one record as its own file (names sort by time; the random part keeps them unique)."""
        _check_id(record.photo_id)
        stamp = re.sub(r"[^0-9TZ]", "", record.time)
        path = self.records_dir / f"{stamp}-{secrets.token_hex(4)}.json"
        atomic_write(path, record.to_json().encode())
        return path

    def forget_chat(self, chat: str) -> tuple[int, int]:
        """Delete every record of the chat hash ``chat`` and the photos no other record needs.
        Returns (records deleted, photos deleted)."""
        return self._delete_records(lambda record: record.chat == chat)

    def purge_older_than(self, cutoff: float) -> tuple[int, int]:
        """Delete the records made before ``cutoff`` (seconds since the epoch) and the photos no remaining
        record needs (the retention period). Returns (records deleted, photos deleted)."""
        return self._delete_records(lambda record: record_epoch(record) < cutoff)

    def _delete_records(self, doomed: Callable[[FeedbackRecord], bool]) -> tuple[int, int]:
        kept_photos, dropped_photos, deleted = set(), set(), 0
        for path, record in self._records_with_paths():
            if doomed(record):
                path.unlink(missing_ok=True)
                dropped_photos.add(record.photo_id)
                deleted += 1
            else:
                kept_photos.add(record.photo_id)
        photos = 0
        for photo_id in dropped_photos - kept_photos:
            photo = self.photo_path(photo_id)
            if photo is not None:
                photo.unlink(missing_ok=True)
                photos += 1
        return deleted, photos

    def remove_stale_temp_files(self, older_than_s: float) -> int:
        """Delete unfinished files older than ``older_than_s`` (leftovers of a killed writer); returns how many."""
        now, removed = time.time(), 0
        for directory in (self.root, self.photos_dir, self.records_dir):
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
    def _records_with_paths(self) -> Iterator[tuple[Path, FeedbackRecord]]:
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.iterdir()):
            if is_temp(path) or path.suffix != ".json":
                continue
            try:
                record = FeedbackRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:  # deleted (forget_chat) between listing and reading
                continue
            except (ValueError, KeyError, TypeError, InboxError) as error:
                log.warning("skipped feedback record %s: %s", path, error)
                continue
            yield path, record

    def records(self) -> list[FeedbackRecord]:
        """Every complete record, oldest first; temp files and damaged files are skipped."""
        return [record for _, record in self._records_with_paths()]

    def photo_count(self) -> int:
        if not self.photos_dir.is_dir():
            return 0
        return sum(1 for p in self.photos_dir.iterdir() if not is_temp(p))


def _check_id(photo_id: str) -> None:
    if not _SAFE_ID.fullmatch(photo_id):
        raise InboxError(f"unusable photo id {photo_id!r}")
