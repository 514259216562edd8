"""The bytes in flight: downloaded, not yet decoded, across every request (MAX_BYTES_IN_FLIGHT).

Each classification reserves its file's size (MAX_FILE_BYTES when Telegram gave none) before it downloads,
and gives it back once its photo was decoded and classified, when the handler lets go of the bytes. A
request that would go past the limit is refused at once, before any download, with :class:`Busy` (the user
is told to try again), so 128 admitted 20 MB documents can never all sit in memory at once. The budget
lives on the event loop only (no lock): reserving and releasing are plain additions between awaits.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bot.inference.contract import Busy


class BytesInFlight:
    """A counter of reserved bytes with a ceiling; :meth:`hold` reserves for the length of a ``with``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Reserve ``size`` bytes, or raise :class:`Busy` if that would pass the limit (nothing reserved)."""
        if self.held + size > self.limit:
            raise Busy(f"{self.held} bytes are downloaded and waiting to be decoded; the limit is {self.limit}")
        self.held += size
        try:
            yield
        finally:
            self.held -= size
