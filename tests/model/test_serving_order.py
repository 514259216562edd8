"""The serving core's order of work, with held heat maps and a frozen clock: classifications before maps, every
chat's coarse map before any fine map, chats taking turns, a fine map pausing for a new coarse map, a chat's fair
share of the map queue, stop with work in flight.

The heat-map work runs on :class:`HeldEngine`, a :class:`model.engine.ServingEngine` that classifies with the real
torch engine and whose explainer "runs" a level by calling the scheduler's pause point in a loop until the test
releases it, exactly where a real explainer calls it between batches. So what runs when is decided by the
scheduler alone, and nothing depends on how long a real map takes. A job's photo bytes name its chat.
"""
import asyncio
import dataclasses
import itertools
import threading

import numpy as np
import pytest

from bot.config import Settings
from model.occlusion_result import OcclusionResult
from model.serving.admission import Busy, Stopping
from model.serving.scheduler import Scheduler, State
from model.torch_engine import TorchChoices, TorchEngine

STEP = 60
TWO_LEVELS = [(112, 112), (112, 56)]
_photos = itertools.count()


class FrozenClock:
    now = 0.0

    def __call__(self):
        return self.now


class HeldEngine:
    """The torch engine for classification; held map levels that record ("start"/"end", chat, level) in order."""

    def __init__(self, engine: TorchEngine):
        self._engine = engine
        self.class_names, self.checkpoint_id = engine.class_names, engine.checkpoint_id
        self.preprocess_config = engine.preprocess_config
        self.events = []
        self.lock = threading.Lock()
        self.gates: dict[tuple, threading.Event] = {}

    preparation = property(lambda self: self._engine.preparation)

    def prepare(self, workers, threads, probe_batch):
        return self._engine.prepare(workers, threads, probe_batch)

    def probabilities(self, batch):
        return self._engine.probabilities(batch)

    def use_threads(self, threads):
        self._engine.use_threads(threads)

    def warm_up(self, batch, threads):
        return self._engine.warm_up(batch, threads)

    def decode(self, data: bytes) -> np.ndarray:
        if data.startswith(b"held:"):
            return np.frombuffer(data, dtype=np.uint8)
        return self._engine.decode(data)

    def explainer(self, patch, stride, batch_size):
        return _HeldExplainer(self, patch, stride)

    def hold(self, chat, level) -> threading.Event:
        return self.gates.setdefault((chat, level), threading.Event())

    def started(self, chat, level) -> bool:
        with self.lock:
            return ("start", chat, level) in self.events


class _HeldExplainer:
    def __init__(self, engine: HeldEngine, patch: int, stride: int):
        self.engine, self.patch, self.stride = engine, patch, stride

    def explain(self, image, target=None, *, between_batches=None):
        chat = bytes(image).decode().split(":")[1]
        level = TWO_LEVELS.index((self.patch, self.stride))
        events, gate = self.engine.events, self.engine.gates.get((chat, level))
        with self.engine.lock:
            events.append(("start", chat, level))
        between_batches(0, 1)
        while gate is not None and not gate.wait(0.005):
            between_batches(0, 1)  # the explainer's pause point, between its batches
        with self.engine.lock:
            events.append(("end", chat, level))
        return OcclusionResult(np.zeros((1, 1), np.float32), 0, 1.0)


@pytest.fixture
async def scheduler(classifier):
    made = []

    def make(**overrides):
        overrides.setdefault("warm_up_batch", 0)
        config = dataclasses.replace(Settings(token="test").scheduler_config(), **overrides)
        engine = HeldEngine(TorchEngine(classifier, TorchChoices(frozen_graph=False, precision="fp32", runtime="torch")))
        service = Scheduler(engine, config.compute(), config.limits(), clock=FrozenClock())
        service.maps = engine
        service.start()
        made.append(service)
        return service

    yield make
    for service in made:
        for gate in service.maps.gates.values():
            gate.set()
        await service.stop()


async def wait_until(condition):
    async with asyncio.timeout(STEP):
        while not condition():
            await asyncio.sleep(0.005)


async def collect(service, chat, levels=TWO_LEVELS, log=None):
    maps = []
    async for explanation in service.explain(chat, f"held:{chat}:{next(_photos)}".encode(), levels):
        maps.append(explanation)
        if log is not None:
            log.append((chat, explanation.final))
    return maps


@pytest.mark.parametrize("workers", [1, 2])
async def test_classifications_first_then_every_coarse_map_then_fine_maps_chats_taking_turns(
        scheduler, classifier, workers):
    service = scheduler(classify_workers=workers, torch_threads=2, max_batch_wait_s=1000.0)
    maps = service.maps
    release_a = maps.hold("a", 0)
    order = []
    first = asyncio.create_task(collect(service, "a", log=order))
    await wait_until(lambda: maps.started("a", 0))
    # While a's coarse map runs: two /why from chat b, one from c, and a photo from d.
    later = [asyncio.create_task(collect(service, chat, log=order)) for chat in ("b", "b", "c")]
    await wait_until(lambda: service.queue_length() == 4)
    photo = asyncio.create_task(service.classify_array("d", classifier.preprocess(classifier.open(_jpeg())).numpy()))
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
    maps = service.maps
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
    maps = service.maps
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
    release = service.maps.hold("a", 0)
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
    maps = service.maps
    maps.hold("a", 0)  # never released: the map is running when the stop comes
    running = asyncio.create_task(collect(service, "a"))
    queued = asyncio.create_task(collect(service, "b"))
    await wait_until(lambda: maps.started("a", 0) and service.queue_length() == 2)
    tensor = classifier.preprocess(classifier.open(_jpeg())).numpy()
    with service.reserve("downloading"):  # the photo's batch waits for this one (frozen clock)
        photo = asyncio.create_task(service.classify_array("d", tensor))
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


async def test_a_chat_holds_at_most_its_fair_share_of_the_map_queue(scheduler):
    service = scheduler(why_queue_size=4, per_chat_queue=20)
    release = service.maps.hold("a", 0)
    flood = [asyncio.create_task(collect(service, "a")) for _ in range(2)]  # half of the map queue
    await wait_until(lambda: service.queue_length() == 2)
    with pytest.raises(Busy, match="share"):
        await collect(service, "a")  # a third one from the same chat is refused ...
    other = asyncio.create_task(collect(service, "b"))  # ... while another chat's /why is still admitted
    await wait_until(lambda: service.queue_length() == 3)
    release.set()
    async with asyncio.timeout(STEP):
        await asyncio.gather(*flood, other)


def _jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 240, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()
