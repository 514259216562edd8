"""The scheduler's order of work, with held heat maps and a frozen clock: classifications before maps, every
chat's coarse map before any fine map, chats taking turns, a fine map pausing for a new coarse map, stop
with work in flight.

The heat-map work itself is replaced by :class:`HeldMaps`: a level "runs" by calling the scheduler's pause
point in a loop until the test releases it, exactly where the real explainer calls it between batches. So
what runs when is decided by the scheduler alone, and nothing depends on how long a real map takes.
"""
import asyncio
import dataclasses
import threading

import pytest

from bot.config import Settings
from bot.inference import Explanation
from bot.scheduler import Busy, InferenceScheduler, State, Stopping

STEP = 60


class FrozenClock:
    now = 0.0

    def __call__(self):
        return self.now


class HeldMaps:
    """Stands in for bot.heatmaps.HeatMapMaker; records ("start"/"end", chat, level) in the order they happen."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.gates: dict[tuple, threading.Event] = {}

    def hold(self, chat, level) -> threading.Event:
        return self.gates.setdefault((chat, level), threading.Event())

    def run_next_level(self, job, pause):
        level = job.next_level
        with self.lock:
            self.events.append(("start", job.chat_id, level))
        gate = self.gates.get((job.chat_id, level))
        pause(0, 1)
        while gate is not None and not gate.wait(0.005):
            pause(0, 1)  # the explainer's pause point, between its batches
        job.next_level += 1
        with self.lock:
            self.events.append(("end", job.chat_id, level))
        patch, stride = job.levels[level]
        return Explanation(b"", "x", 1.0, patch, stride, final=job.finished, cached=False)

    def started(self, chat, level) -> bool:
        with self.lock:
            return ("start", chat, level) in self.events


TWO_LEVELS = [(112, 112), (112, 56)]


@pytest.fixture
async def scheduler(classifier):
    made = []

    def make(**overrides):
        overrides.setdefault("warm_up_batch", 0)
        overrides.setdefault("frozen_graph", False)
        overrides.setdefault("precision", "fp32")  # torch fp32: exact answers, no probe per start
        overrides.setdefault("runtime", "torch")
        config = dataclasses.replace(Settings(token="test").scheduler_config(), **overrides)
        service = InferenceScheduler(classifier, config, clock=FrozenClock())
        service.heatmaps = HeldMaps()
        service.start()
        made.append(service)
        return service

    yield make
    for service in made:
        for gate in service.heatmaps.gates.values():
            gate.set()
        await service.stop()


async def wait_until(condition):
    async with asyncio.timeout(STEP):
        while not condition():
            await asyncio.sleep(0.005)


async def collect(service, chat, levels=TWO_LEVELS, log=None):
    maps = []
    async for explanation in service.explain(chat, b"photo", levels):
        maps.append(explanation)
        if log is not None:
            log.append((chat, explanation.final))
    return maps


@pytest.mark.parametrize("workers", [1, 2])
async def test_classifications_first_then_every_coarse_map_then_fine_maps_chats_taking_turns(
        scheduler, classifier, workers):
    service = scheduler(classify_workers=workers, torch_threads=2, max_batch_wait_s=1000.0)
    maps = service.heatmaps
    release_a = maps.hold("a", 0)
    order = []
    first = asyncio.create_task(collect(service, "a", log=order))
    await wait_until(lambda: maps.started("a", 0))
    # While a's coarse map runs: two /why from chat b, one from c, and a photo from d.
    later = [asyncio.create_task(collect(service, chat, log=order)) for chat in ("b", "b", "c")]
    await wait_until(lambda: service.queue_length() == 4)
    photo = asyncio.create_task(service.classify_tensor("d", classifier.preprocess(classifier.open(_jpeg()))))
    async with asyncio.timeout(STEP):
        prediction = await photo  # answered at a's pause point, while a's map is still held
    assert prediction.label in classifier.class_names and not maps.started("b", 0)
    release_a.set()
    async with asyncio.timeout(STEP):
        await asyncio.gather(first, *later)
    started = [(chat, level) for kind, chat, level in maps.events if kind == "start"]
    assert started == [("a", 0), ("b", 0), ("c", 0), ("b", 0),  # every coarse map, chats in turn
                       ("a", 1), ("b", 1), ("c", 1), ("b", 1)]  # then the fine maps, in turn
    assert service.heatmap_pauses >= 1
    assert sorted(order) == sorted([(chat, final) for chat in "abbc" for final in (False, True)])


async def test_a_fine_map_pauses_for_a_new_coarse_map(scheduler):
    service = scheduler()
    maps = service.heatmaps
    release_fine = maps.hold("a", 1)
    first = asyncio.create_task(collect(service, "a"))
    await wait_until(lambda: maps.started("a", 1))
    newcomer = asyncio.create_task(collect(service, "b"))
    await wait_until(lambda: ("end", "b", 0) in maps.events)  # b's coarse map, inside a's fine one
    assert ("end", "a", 1) not in maps.events
    release_fine.set()
    async with asyncio.timeout(STEP):
        await asyncio.gather(first, newcomer)
    assert maps.events == [("start", "a", 0), ("end", "a", 0), ("start", "a", 1), ("start", "b", 0),
                           ("end", "b", 0), ("end", "a", 1), ("start", "b", 1), ("end", "b", 1)]


async def test_a_coarse_map_does_not_pause_for_another_coarse_map(scheduler):
    service = scheduler()
    maps = service.heatmaps
    release = maps.hold("a", 0)
    first = asyncio.create_task(collect(service, "a", levels=[(112, 112)]))
    await wait_until(lambda: maps.started("a", 0))
    second = asyncio.create_task(collect(service, "b", levels=[(112, 112)]))
    await wait_until(lambda: service.queue_length() == 2)
    await asyncio.sleep(0.05)  # a's pause points come and go meanwhile
    assert not maps.started("b", 0)
    release.set()
    async with asyncio.timeout(STEP):
        await asyncio.gather(first, second)


async def test_why_queue_is_bounded(scheduler):
    service = scheduler(why_queue_size=2)
    release = service.heatmaps.hold("a", 0)
    tasks = [asyncio.create_task(collect(service, chat)) for chat in ("a", "b")]
    await wait_until(lambda: service.queue_length() == 2)
    with pytest.raises(Busy) as refused:
        await collect(service, "c")
    assert not isinstance(refused.value, Stopping)
    release.set()
    async with asyncio.timeout(STEP):
        await asyncio.gather(*tasks)


async def test_stop_with_work_in_flight_ends_maps_and_answers_photos(scheduler, classifier):
    service = scheduler(max_batch_wait_s=1000.0)
    maps = service.heatmaps
    maps.hold("a", 0)  # never released: the map is running when the stop comes
    running = asyncio.create_task(collect(service, "a"))
    queued = asyncio.create_task(collect(service, "b"))
    await wait_until(lambda: maps.started("a", 0) and service.queue_length() == 2)
    tensor = classifier.preprocess(classifier.open(_jpeg()))
    with service.reserve("downloading"):  # the photo's batch waits for this one (frozen clock)
        photo = asyncio.create_task(service.classify_tensor("d", tensor))
        await wait_until(lambda: service.waiting_for_batch() == 1)
        async with asyncio.timeout(STEP):
            await service.stop()
        assert (await photo).label in classifier.class_names  # queued work is still answered
    for task in (running, queued):
        with pytest.raises(Stopping):
            await task
    assert service.state is State.STOPPED and not any(thread.is_alive() for thread in service.threads)
    with pytest.raises(Stopping):
        service.reserve("late")


def _jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 240, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()
