"""The inference scheduler: micro-batches give the same answers as one-by-one, errors stay per request,
a full queue says Busy, shutdown drains, heat maps come coarse then fine, cached.

Batch composition is forced with a frozen clock: a batch forms when ``max_batch`` requests wait, or when
no photo is on its way any more. A reservation whose photo is never sent ("still downloading") holds
partial batches for as long as a test needs, so nothing here depends on timing. The order of work
(tests/bot/test_unit_scheduler_order.py) is tested with held heat maps.
"""
import asyncio
import dataclasses
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bot.config import Settings
from bot.inference.local import Busy, InferenceScheduler
from model import ImageError

STEP = 60  # seconds: generous bound on any await, so a bug fails instead of hanging


class FrozenClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
async def make_service(classifier):
    services = []

    def make(clock=None, model=None, **config):
        service = InferenceScheduler(model or classifier, scheduler_config(**config), clock=clock or FrozenClock())
        service.start()
        services.append(service)
        return service

    yield make
    for service in services:
        await service.stop()


def scheduler_config(**overrides):
    """The bot's own defaults (Settings), without the warm-up passes unless asked, with ``overrides``."""
    overrides.setdefault("warm_up_batch", 0)
    overrides.setdefault("frozen_graph", False)
    overrides.setdefault("precision", "fp32")  # torch fp32: exact answers, no probe per start
    overrides.setdefault("runtime", "torch")
    return dataclasses.replace(Settings(token="test").scheduler_config(), **overrides)


async def wait_until(condition, what):
    async with asyncio.timeout(STEP):
        while not condition():
            await asyncio.sleep(0.01)


def make_photo(width=240, height=240, seed=0) -> Image.Image:
    # Full-range noise, unlike devtools.samples.make_photo (a coloured rectangle on dark noise).
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")


def photos(n):
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        make_photo(200 + 10 * i, 240, seed=i).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


async def test_batched_results_match_unbatched(make_service, classifier):
    service = make_service(classify_workers=1, max_batch=3, max_batch_wait_s=1000.0)  # frozen clock: full batches only
    data = photos(6)
    async with asyncio.timeout(STEP):
        predictions = await asyncio.gather(*(service.classify(f"chat{i}", d) for i, d in enumerate(data)))
    assert list(service.batch_sizes) == [3, 3]
    for prediction, photo in zip(predictions, data):
        single = classifier.probabilities(classifier.preprocess(classifier.open(photo)).unsqueeze(0))[0]
        expected = {name: float(p) for name, p in zip(classifier.class_names, single)}
        for label, confidence in prediction.top:
            assert confidence == pytest.approx(expected[label], abs=1e-5)
        assert prediction.label == max(expected, key=expected.get)


@pytest.mark.parametrize("workers", [1, 2])  # 2: the one graph runs in two threads at once
async def test_frozen_graph_is_built_in_the_service_and_gives_the_eager_answers(tiny_checkpoint, workers):
    from model import load_classifier

    eager, served = load_classifier(tiny_checkpoint), load_classifier(tiny_checkpoint)
    service = InferenceScheduler(served, scheduler_config(torch_threads=2, classify_workers=workers, max_batch=2 * workers,
                                                          max_batch_wait_s=1000.0, frozen_graph=True), clock=FrozenClock())
    service.start()
    data = photos(8)
    try:
        async with asyncio.timeout(STEP):
            predictions = await asyncio.gather(*(service.classify(f"chat{i}", d) for i, d in enumerate(data)))
    finally:
        await service.stop()
    assert served.graph is not None and eager.graph is None
    assert list(service.batch_sizes) == [2] * 4  # each worker's share of 2 * workers
    for prediction, photo in zip(predictions, data):
        expected = eager.predict_image(eager.open(photo))
        assert prediction.label == expected.label
        assert prediction.confidence == pytest.approx(expected.confidence, abs=1e-5)


async def test_side_by_side_workers_match_unbatched_and_split_the_work(make_service, classifier):
    service = make_service(classify_workers=2, torch_threads=2, max_batch=4, max_batch_wait_s=1000.0)
    data = photos(8)
    async with asyncio.timeout(STEP):
        predictions = await asyncio.gather(*(service.classify(f"chat{i}", d) for i, d in enumerate(data)))
    assert sum(service.batch_sizes) == 8 and max(service.batch_sizes) <= 2  # a worker's share: 4 / 2
    for prediction, photo in zip(predictions, data):
        expected = classifier.predict_image(classifier.open(photo))
        assert prediction.label == expected.label
        assert prediction.confidence == pytest.approx(expected.confidence, abs=1e-5)


def spy_on_forward_passes(classifier, until_concurrent: int = 0):
    """A copy of ``classifier`` whose passes record (batch size, torch threads of the calling thread); with
    ``until_concurrent``, each pass first waits until that many passes have started (or STEP passes)."""
    passes, started, lock = [], threading.Condition(), threading.Lock()
    spy = dataclasses.replace(classifier)

    def probabilities(batch):
        with lock:
            passes.append((batch.shape[0], torch.get_num_threads()))
        with started:
            started.notify_all()
            started.wait_for(lambda: len(passes) >= until_concurrent, timeout=STEP)
        return classifier.probabilities(batch)

    spy.probabilities = probabilities
    return spy, passes


async def test_two_workers_run_two_batches_at_once_on_one_thread_each(make_service, classifier):
    spy, passes = spy_on_forward_passes(classifier, until_concurrent=2)
    service = make_service(model=spy, torch_threads=2, classify_workers=2, max_batch=4, max_batch_wait_s=1000.0)
    tensor = classifier.preprocess(make_photo())
    with service.reserve("downloading"), service.reserve("downloading too"):  # more work in sight: share
        async with asyncio.timeout(STEP / 2):  # one worker alone would wait STEP in its first pass
            await asyncio.gather(*(service.classify_tensor(f"chat{i}", tensor) for i in range(4)))
    assert passes == [(2, 1), (2, 1)]


async def test_a_lone_photo_gets_all_the_threads_of_side_by_side_workers(make_service, classifier):
    spy, passes = spy_on_forward_passes(classifier)
    service = make_service(model=spy, torch_threads=2, classify_workers=2)
    async with asyncio.timeout(STEP):
        await service.classify("a", photos(1)[0])
    assert passes == [(1, 2)]


async def test_one_bad_photo_fails_alone(make_service):
    service = make_service(max_batch=3, max_batch_wait_s=1000.0)
    good = photos(3)
    async with asyncio.timeout(STEP):
        results = await asyncio.gather(
            service.classify("a", good[0]), service.classify("b", b"%PDF-1.4 not an image"),
            service.classify("c", good[1]), service.classify("d", good[2]), return_exceptions=True)
    assert isinstance(results[1], ImageError)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 1)


async def test_malformed_tensor_in_a_batch_fails_alone(make_service, classifier):
    service = make_service(classify_workers=1, max_batch=3, max_batch_wait_s=1000.0)
    good = [classifier.preprocess(make_photo(seed=i)) for i in range(2)]
    bad = torch.zeros(4, 224, 224)  # a 4-channel tensor: the network refuses it
    async with asyncio.timeout(STEP):
        results = await asyncio.gather(service.classify_tensor("a", good[0]), service.classify_tensor("b", bad),
                                       service.classify_tensor("c", good[1]), return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert list(service.batch_sizes)[0] == 3  # tried together first, then one by one


async def test_full_queue_is_busy_and_shutdown_drains(make_service, classifier):
    service = make_service(classify_workers=1, max_batch=10, max_batch_wait_s=1000.0, queue_size=4, per_chat_queue=2)
    tensor = classifier.preprocess(make_photo())
    with service.reserve("downloading"):  # counts in the queue, and holds the partial batch
        waiting = [asyncio.create_task(service.classify_tensor(chat, tensor)) for chat in ("a", "a", "b")]
        await wait_until(lambda: service.waiting_for_batch() == 3, "three queued")
        assert service.queue_length() == 4
        with pytest.raises(Busy):
            await service.classify_tensor("c", tensor)  # the whole queue is full
        with pytest.raises(Busy):
            service.reserve("c")  # refused before its download
        assert not any(task.done() for task in waiting)  # nothing ran: the batch is neither full nor due
        async with asyncio.timeout(STEP):
            await service.stop()  # drains: the queued requests are answered, not dropped
            results = await asyncio.gather(*waiting)
    assert [r.label for r in results] == [results[0].label] * 3
    assert list(service.batch_sizes) == [3]
    assert service.queue_length() == 0
    with pytest.raises(Busy):
        await service.classify_tensor("a", tensor)  # stopped


async def test_stop_answers_everything_and_ends_both_side_by_side_workers(make_service, classifier):
    spy, passes = spy_on_forward_passes(classifier, until_concurrent=2)
    service = make_service(model=spy, torch_threads=2, classify_workers=2, max_batch=2, max_batch_wait_s=1000.0)
    tensor = classifier.preprocess(make_photo())
    waiting = [asyncio.create_task(service.classify_tensor(f"chat{i}", tensor)) for i in range(5)]
    await wait_until(lambda: len(passes) >= 1, "a worker busy")
    async with asyncio.timeout(STEP / 2):
        await service.stop()  # while work is queued and running: every request is still answered
        results = await asyncio.gather(*waiting)
    assert len(results) == 5 and sum(size for size, _ in passes) == 5
    assert service.queue_length() == 0
    assert not any(thread.is_alive() for thread in service.threads)


async def test_per_chat_cap(make_service, classifier):
    service = make_service(classify_workers=1, max_batch=10, max_batch_wait_s=1000.0, queue_size=10, per_chat_queue=2)
    tensor = classifier.preprocess(make_photo())
    with service.reserve("downloading"):
        waiting = [asyncio.create_task(service.classify_tensor("album", tensor)) for _ in range(2)]
        await wait_until(lambda: service.waiting_for_batch() == 2, "two queued")
        with pytest.raises(Busy):
            await service.classify_tensor("album", tensor)
        other = asyncio.create_task(service.classify_tensor("someone-else", tensor))
        await wait_until(lambda: service.waiting_for_batch() == 3, "other chat admitted")
    async with asyncio.timeout(STEP):
        await asyncio.gather(*waiting, other)  # the last one on its way gave up: the batch is due


async def test_a_photo_alone_never_waits_for_the_bound(make_service):
    service = make_service(max_batch=8, max_batch_wait_s=1000.0)  # frozen clock: the bound never comes
    async with asyncio.timeout(STEP):
        await service.classify("a", photos(1)[0])
    assert list(service.batch_sizes) == [1]


async def test_a_batch_waits_for_a_photo_still_downloading(make_service):
    service = make_service(max_batch=8, max_batch_wait_s=1000.0)
    first, second = photos(2)
    with service.reserve("a") as early, service.reserve("b") as late:
        early_answer = asyncio.create_task(early.classify(first))
        await wait_until(lambda: service.waiting_for_batch() == 1, "the first photo decoded")
        async with asyncio.timeout(STEP):
            await asyncio.gather(early_answer, late.classify(second))
    assert list(service.batch_sizes) == [2]  # the first photo waited for the second instead of leaving alone
    with pytest.raises(RuntimeError):
        await early.classify(first)  # one photo per reservation


async def test_a_download_that_fails_does_not_hold_the_batch(make_service):
    service = make_service(max_batch=8, max_batch_wait_s=1000.0)
    with service.reserve("a") as early:
        failed = service.reserve("b")
        early_answer = asyncio.create_task(early.classify(photos(1)[0]))
        await wait_until(lambda: service.waiting_for_batch() == 1, "the first photo decoded")
        with failed:  # the download failed: the handler leaves the reservation without a photo
            pass
        async with asyncio.timeout(STEP):
            await early_answer
    assert list(service.batch_sizes) == [1]
    assert service.queue_length() == 0


async def test_a_bad_photo_does_not_hold_the_batch(make_service):
    service = make_service(max_batch=8, max_batch_wait_s=1000.0)
    async with asyncio.timeout(STEP):
        results = await asyncio.gather(service.classify("a", photos(1)[0]), service.classify("b", b"not an image"),
                                       return_exceptions=True)
    assert isinstance(results[1], ImageError) and not isinstance(results[0], BaseException)


@pytest.mark.parametrize("workers", [1, 2])
async def test_warm_up_passes_run_before_the_first_request(classifier, workers):
    shapes = []
    spy = dataclasses.replace(classifier)
    spy.probabilities = lambda batch: (shapes.append((tuple(batch.shape), torch.get_num_threads())),
                                       classifier.probabilities(batch))[1]
    service = InferenceScheduler(spy, scheduler_config(torch_threads=2, classify_workers=workers, max_batch=6,
                                                       warm_up_batch=6), clock=FrozenClock())
    service.start()
    try:
        async with asyncio.timeout(STEP):
            await service.ready()
            warm = list(shapes)
            await service.classify("a", photos(1)[0])
    finally:
        await service.stop()
    if workers == 1:
        assert warm == [((6, 3, 224, 224), 2)]
    else:  # a lone photo's pass on both threads, and each worker's share (3) on its own thread
        assert sorted(warm) == [((1, 3, 224, 224), 2), ((3, 3, 224, 224), 1), ((3, 3, 224, 224), 1)]
    assert shapes[len(warm):] == [((1, 3, 224, 224), 2)]


async def test_requests_wait_in_the_queue_during_the_warm_up(classifier):
    service = InferenceScheduler(classifier, scheduler_config(warm_up_batch=4), clock=FrozenClock())
    service.start()
    try:
        async with asyncio.timeout(STEP):
            prediction = await service.classify("a", photos(1)[0])  # admitted while STARTING, answered after
    finally:
        await service.stop()
    assert prediction.label in classifier.class_names


async def test_heat_maps_coarse_then_fine_then_cached(make_service):
    service = make_service(max_batch_wait_s=0.0)
    photo = photos(1)[0]
    levels = [(112, 112), (112, 56)]
    async with asyncio.timeout(STEP):
        first = [e async for e in service.explain("a", photo, levels)]
        again = [e async for e in service.explain("a", photo, levels)]
    assert [(e.patch, e.stride, e.final, e.cached) for e in first] == [(112, 112, False, False), (112, 56, True, False)]
    assert [(e.patch, e.stride, e.final, e.cached) for e in again] == [(112, 56, True, True)]
    assert first[0].png.startswith(b"\x89PNG") and first[1].png.startswith(b"\x89PNG")
    assert first[1].label == again[0].label


async def test_heat_map_of_bad_bytes_raises_image_error(make_service):
    service = make_service(max_batch_wait_s=0.0)
    with pytest.raises(ImageError):
        async with asyncio.timeout(STEP):
            [e async for e in service.explain("a", b"", [(112, 112)])]
