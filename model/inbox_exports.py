"""What else holds a feedback photo: the folders ``training.feedback export`` linked it into, and an admin's
review of it. :class:`model.inbox.Inbox` calls these when it deletes a photo (/forget, RETENTION_DAYS), so a
deleted photo leaves no hard link (the bytes would live on) and no review behind.

``exports.json`` lists the export folders (absolute paths); only a folder that still carries the export's
marker file is touched, so a folder the operator reused for something else is never changed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

REVIEWS_FILE = "reviews.json"
EXPORTS_FILE = "exports.json"
EXPORT_MARKER = ".feedback-export"  # marks a folder training.feedback export made (and may change)


def register_export(root: Path, folder: Path) -> None:
    from .inbox import atomic_write  # the inbox's own writer (temp file, fsync, rename, 0600)

    folders = {str(path) for path in export_folders(root)} | {str(Path(folder).resolve())}
    atomic_write(Path(root) / EXPORTS_FILE, (json.dumps({"folders": sorted(folders)}, indent=1) + "\n").encode())


def export_folders(root: Path) -> list[Path]:
    try:
        data = json.loads((Path(root) / EXPORTS_FILE).read_text(encoding="utf-8"))
        return [Path(folder) for folder in data.get("folders", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError, TypeError) as error:
        log.warning("feedback: %s cannot be read (%s); exported links are not deleted", EXPORTS_FILE, error)
        return []


def unlink_exported(root: Path, file_name: str) -> None:
    """Delete ``<export>/<class>/<file_name>`` from every registered export (a link or a copy of the photo)."""
    for folder in export_folders(root):
        if not (folder / EXPORT_MARKER).is_file():  # not (or no longer) an export: never touch it
            continue
        try:
            for class_dir in folder.iterdir():
                if class_dir.is_dir():
                    (class_dir / file_name).unlink(missing_ok=True)
        except OSError as error:
            log.warning("feedback: could not delete %s from the export %s: %s", file_name, folder, error)


def drop_reviews(root: Path, photo_ids: list[str]) -> None:
    """Remove the reviews of deleted photos from ``reviews.json``."""
    from .inbox import atomic_write

    path = Path(root) / REVIEWS_FILE
    if not photo_ids or not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    labels = {photo: label for photo, label in data.get("labels", {}).items() if photo not in photo_ids}
    if len(labels) != len(data.get("labels", {})):
        atomic_write(path, (json.dumps({"labels": dict(sorted(labels.items()))}, indent=1) + "\n").encode())
