"""From the compute threads back to the event loop: settling futures and feeding queues thread-safely, and
:class:`Reservation`, one admitted classification from before its download to its answer."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from model.prediction import Prediction


def call_threadsafe(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits for this any more
        pass


def settle_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result, error: BaseException | None) -> None:
    def settle():
        if future.done():  # the caller gave up (cancelled)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    call_threadsafe(loop, settle)


class Reservation:
    """One admitted classification (see :meth:`model.serving.scheduler.Scheduler.reserve`). Use it as a context
    manager: leaving it releases the place, and tells the batcher not to wait for a photo that never came.

    The scheduler hands it what it may do (decode, queue, give up, release), not its insides."""

    def __init__(self, decode: Callable[[bytes], Awaitable[np.ndarray]],
                 queue: Callable[[np.ndarray], Awaitable[tuple[Prediction, int]]],
                 not_coming: Callable[[], None], release: Callable[[], None]):
        self._decode, self._queue, self._not_coming, self._release = decode, queue, not_coming, release
        self._on_the_way = True  # counted as on its way until it is queued or given up
        self.batch_size = 0  # the size of the batch that answered it

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._on_the_way:  # the download or the decoding failed: nothing to wait for any more
            self._on_the_way = False
            self._not_coming()
        self._release()

    async def classify(self, data: bytes) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch. Once only."""
        return await self.classify_array(await self.decode(data))

    async def decode(self, data: bytes) -> np.ndarray:
        """The photo as the model takes it, decoded on the scheduler's decode pool (raises :class:`model.ImageError`)."""
        return await self._decode(data)

    async def classify_array(self, array) -> Prediction:
        """An already preprocessed 3 x crop x crop image (a NumPy array, or anything ``np.asarray`` takes)."""
        if not self._on_the_way:
            raise RuntimeError("a reservation classifies one photo")
        self._on_the_way = False  # the scheduler takes it off the count in the same step as it queues it
        prediction, self.batch_size = await self._queue(np.asarray(array, dtype=np.float32))
        return prediction

    classify_tensor = classify_array
