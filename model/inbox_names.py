"""The names of the inbox's record files, which index them: who judged, which photo, and when, without a read.

``records/<chat hash>/<stamp>-<random>-<user hash or _>-<photo id>.json``: the folder is the chat, so /forget of
a chat removes one folder; the name carries the time (the retention purge), the user (/forget of one user in a
group) and the photo (which photos a remaining record still needs). Record files are written once and never
changed, so their names stay true; the content is still the authority, and a name that does not parse (a
record of the older flat layout, a file renamed by hand) is read instead.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

log = logging.getLogger(__name__)

NO_USER = "_"  # a record made before records carried a user
_USER = re.compile(r"[0-9a-f]{1,64}", re.ASCII)
_NAME = re.compile(r"([0-9]{8}T[0-9]{6,12}Z)-([0-9a-f]{8})-([0-9a-f]{1,64}|_)-([A-Za-z0-9_-]{1,128})\.json", re.ASCII)
_STAMP_FORMATS = ("%Y%m%dT%H%M%S%fZ", "%Y%m%dT%H%M%SZ")
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RecordName:
    epoch: float | None  # when the record was made; None when its stamp cannot be read
    user: str  # the user hash, or NO_USER
    photo_id: str


def stamp_of(time_text: str) -> str:
    """The digits of an ISO time, for a file name that sorts by time ("20261124T200000123456Z")."""
    return re.sub(r"[^0-9TZ]", "", time_text)


def record_file_name(time_text: str, random_part: str, user: str, photo_id: str) -> str:
    return f"{stamp_of(time_text)}-{random_part}-{user if _USER.fullmatch(user or '') else NO_USER}-{photo_id}.json"


def parse_record_name(name: str) -> RecordName | None:
    """What a record file's name says, or ``None`` for a name of another shape (read the file instead)."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return RecordName(_parse_time(match[1], _STAMP_FORMATS), match[3], match[4])


def time_epoch(time_text: str) -> float | None:
    """A record's ``time`` (UTC ISO 8601) in seconds since the epoch; ``None`` (logged) for another format."""
    epoch = _parse_time(time_text, _TIME_FORMATS)
    if epoch is None:
        log.warning("feedback record time %r is not UTC ISO 8601; the record is skipped by time", time_text[:40])
    return epoch


def _parse_time(text: str, formats: tuple[str, ...]) -> float | None:
    for time_format in formats:
        try:
            return datetime.strptime(text, time_format).replace(tzinfo=timezone.utc).timestamp()
        except (ValueError, TypeError):
            continue
    return None
