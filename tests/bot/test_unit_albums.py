"""The album collector: complete once every photo is finished and the quiet time after the last one passed."""
from __future__ import annotations

import asyncio

import pytest

from bot.handlers.albums import Albums
from bot.inference.local import Stopping


async def test_an_album_completes_after_its_last_photo_and_the_wait():
    albums = Albums(wait_s=0.1)
    album, first, sends = albums.join(1, "g", 10)
    assert sends and albums.is_open(1, "g")
    albums.finish(album, first, key="k1")
    await asyncio.sleep(0.06)
    _, second, sends_too = albums.join(1, "g", 11)  # the next photo arrives within the wait: it pushes it back
    assert not sends_too
    await asyncio.sleep(0.06)
    assert not album.complete.done(), "complete before its second photo was classified"
    albums.finish(album, second, problem="busy")
    assert not album.complete.done(), "complete before the wait after the last photo passed"
    photos = await asyncio.wait_for(album.complete, 1)
    assert [p.message_id for p in photos] == [10, 11] and album.number_of(second) == 2
    albums.close(album)
    assert not albums.is_open(1, "g")


async def test_photos_are_numbered_in_the_order_they_were_sent():
    albums = Albums(wait_s=0)
    album, late, _ = albums.join(1, "g", 12)  # handlers may join in another order than the messages
    _, early, _ = albums.join(1, "g", 11)
    albums.finish(album, late, key="b")
    albums.finish(album, early, key="a")
    assert [p.key for p in await album.complete] == ["a", "b"]


async def test_a_stop_ends_every_open_album():
    albums = Albums(wait_s=10)
    album, _, _ = albums.join(1, "g", 10)
    albums.stop()
    with pytest.raises(Stopping):
        await album.complete
    with pytest.raises(Stopping):
        await album.sent
    assert not albums.is_open(1, "g")
