"""The feedback inbox: users' "right / wrong" judgements with their photos, on disk, for retraining.

Layout under FEEDBACK_DIR (only when the operator sets it):

    photos/<file_unique_id>.<ext>          each photo once, however often it is judged
    labels/<class>/<file_unique_id>.<ext>  hard link (or copy) per label: ``python -m training --extra
                                           FEEDBACK_DIR/labels`` trains on it; ``none_of_these/`` is ignored
    records/<time>-<random>.json           one JSON record per judgement (see ``FeedbackRecord``)
    .salt                                  the salt of the chat-id hashes (created once, mode 0600)

Every file appears atomically: written to a hidden ``.tmp`` name in the same folder, flushed, then renamed.
A crash leaves at most a hidden temporary file, never half a record, and readers (training, the report)
can scan the folders while the bot writes; they skip hidden files.
"""
from __future__ import annotations

import datetime as dtm
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

NONE_OF_THESE = "none_of_these"


@dataclass(frozen=True)
class FeedbackRecord:
    """One judgement. ``label`` is the class the user chose (``predicted`` when they said "right"),
    or ``none_of_these``; ``chat`` is a salted hash, never the chat id."""

    time: str
    file_unique_id: str
    photo: str  # relative to FEEDBACK_DIR
    predicted: str
    confidence: float
    label: str
    correct: bool
    checkpoint_id: str
    chat: str


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` gets ``data`` whole or not at all (temp file + fsync + rename in the same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _safe_name(text: str) -> str:
    """File-system safe (Telegram ids are already [A-Za-z0-9_-]; this only guards against surprises)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:100] or "unnamed"


def image_extension(data: bytes) -> str:
    """The extension that matches the bytes (so training's decoder and file browsers agree)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}.get(
                image.format or "", "img")
    except Exception:
        return "img"


class FeedbackInbox:
    """Synchronous on purpose (small files); the handlers call it through ``asyncio.to_thread``."""

    def __init__(self, directory: Path, salt: str = ""):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.salt = salt or self._stored_salt()

    def _stored_salt(self) -> str:
        path = self.directory / ".salt"
        if not path.exists():
            write_atomically(path, secrets.token_hex(16).encode())
            path.chmod(0o600)
        return path.read_text().strip()

    def chat_hash(self, chat_id: int) -> str:
        return hashlib.sha256(f"{self.salt}:{chat_id}".encode()).hexdigest()[:16]

    def photo_path(self, file_unique_id: str) -> Path | None:
        """The stored photo, if this photo was stored before (by any user)."""
        matches = sorted((self.directory / "photos").glob(f"{_safe_name(file_unique_id)}.*"))
        return next((p for p in matches if not p.name.startswith(".")), None)

    def save_photo(self, file_unique_id: str, data: bytes) -> Path:
        existing = self.photo_path(file_unique_id)
        if existing is not None:
            return existing
        path = self.directory / "photos" / f"{_safe_name(file_unique_id)}.{image_extension(data)}"
        write_atomically(path, data)
        return path

    def record(self, *, chat_id: int, file_unique_id: str, photo: Path, predicted: str, confidence: float,
               label: str, checkpoint_id: str, now: dtm.datetime | None = None) -> FeedbackRecord:
        """Link the photo under ``labels/<label>/`` and write the record; returns what was written."""
        now = now or dtm.datetime.now(dtm.timezone.utc)
        self._link_label(photo, label)
        record = FeedbackRecord(
            time=now.isoformat(timespec="seconds"), file_unique_id=file_unique_id,
            photo=str(photo.relative_to(self.directory)), predicted=predicted, confidence=round(float(confidence), 4),
            label=label, correct=label == predicted, checkpoint_id=checkpoint_id, chat=self.chat_hash(chat_id))
        name = f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.json"
        write_atomically(self.directory / "records" / name, json.dumps(asdict(record), indent=1).encode())
        return record

    def _link_label(self, photo: Path, label: str) -> None:
        target = self.directory / "labels" / _safe_name(label) / photo.name
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            try:
                os.link(photo, temporary)  # no second copy of the bytes
            except OSError:
                shutil.copyfile(photo, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def records(self) -> list[FeedbackRecord]:
        """Every complete record (hidden temporary files are not records)."""
        folder = self.directory / "records"
        if not folder.is_dir():
            return []
        return [FeedbackRecord(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))
                if not p.name.startswith(".")]
