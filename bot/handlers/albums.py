"""Albums (Telegram media groups): one reply per album, to its first photo, with a numbered line per photo.

Telegram sends an album as separate messages that share a ``media_group_id``, with no end-of-album marker.
So each photo's handler joins its album here, classifies its photo as usual, and marks it finished; the
album is complete once every photo that joined is finished and ALBUM_WAIT_S has passed since the last one
joined (a later photo pushes the deadline back). The handler that joined first then sends the one reply;
the others wait for it to be sent.

No handler returns before the reply is out, so the journal (:mod:`bot.state.journal`) keeps every photo of an
album open until the album is answered: after a crash mid-album, all its photos are resumed together and
form the album again (one reply). When the bot stops mid-album, :meth:`Albums.stop` ends every open album
with :class:`bot.inference.local.Stopping`, so its photos are kept for the next start too, and if any photo of an
album was stopped, the whole album waits for the next start rather than being answered in part.

Everything here runs on the event loop (no locks); timers are ``loop.call_later``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bot.inference.contract import Stopping
from model import Prediction


@dataclass
class AlbumPhoto:
    message_id: int
    key: str | None = None  # the photo's button key in bot.state.store, once classified
    prediction: Prediction | None = None
    problem: str | None = None  # the user-facing reason it has no prediction
    finished: bool = False


@dataclass(eq=False)
class Album:
    chat_id: int
    group_id: str
    due: float  # monotonic time before which the album is not complete (ALBUM_WAIT_S after the last join)
    photos: list[AlbumPhoto] = field(default_factory=list)
    complete: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    sent: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    timer: asyncio.TimerHandle | None = None

    def in_order(self) -> list[AlbumPhoto]:
        """The photos as the user sent them (message ids grow in a chat)."""
        return sorted(self.photos, key=lambda photo: photo.message_id)

    def number_of(self, photo: AlbumPhoto) -> int:
        return self.in_order().index(photo) + 1


class Albums:
    """The open albums, by (chat, media_group_id)."""

    def __init__(self, wait_s: float, clock: Callable[[], float] = time.monotonic):
        self.wait_s = wait_s
        self.clock = clock
        self._open: dict[tuple[Hashable, str], Album] = {}

    def is_open(self, chat_id: int, group_id: str) -> bool:
        """An album the bot is collecting (in a group: its first photo was addressed to the bot)."""
        return (chat_id, group_id) in self._open

    def join(self, chat_id: int, group_id: str, message_id: int) -> tuple[Album, AlbumPhoto, bool]:
        """Add a photo to its album (opened if new): (album, photo, whether this handler sends the reply)."""
        key = (chat_id, group_id)
        album = self._open.get(key)
        first = album is None
        if first:
            album = self._open[key] = Album(chat_id, group_id, self.clock() + self.wait_s)
        album.due = self.clock() + self.wait_s
        photo = AlbumPhoto(message_id)
        album.photos.append(photo)
        self._check(album)
        return album, photo, first

    def finish(self, album: Album, photo: AlbumPhoto, *, key: str | None = None, prediction: Prediction | None = None,
               problem: str | None = None) -> None:
        photo.key, photo.prediction, photo.problem, photo.finished = key, prediction, problem, True
        self._check(album)

    def stop_photo(self, album: Album) -> None:
        """A photo of ``album`` was cut short by the shutdown: the whole album waits for the next start."""
        self._end(album, Stopping("the bot stopped before the album was answered"))

    def close(self, album: Album) -> None:
        """The reply went out (or failed): later photos of this group start a new album."""
        if self._open.get((album.chat_id, album.group_id)) is album:
            del self._open[(album.chat_id, album.group_id)]
        if album.timer is not None:
            album.timer.cancel()

    def stop(self) -> None:
        """The bot stops: every open album ends with Stopping (its photos stay in the journal)."""
        for album in list(self._open.values()):
            self._end(album, Stopping("the bot stopped before the album was answered"))

    def _end(self, album: Album, error: BaseException) -> None:
        self.close(album)
        for future in (album.complete, album.sent):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: nobody may be left to await the "sent" one

    def _check(self, album: Album) -> None:
        """Complete the album if it is due and every photo is finished, else look again when it is due."""
        if album.complete.done():
            return
        if album.timer is not None:
            album.timer.cancel()
            album.timer = None
        if not all(photo.finished for photo in album.photos):
            return  # the last finish checks again
        delay = album.due - self.clock()
        if delay <= 0:
            album.complete.set_result(album.in_order())
        else:
            album.timer = asyncio.get_running_loop().call_later(delay, self._check, album)
