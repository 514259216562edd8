"""An Explainer replica's map thread (model.serve.replica.MapWork), without Ray: priorities, deadlines, cache."""
from __future__ import annotations

import asyncio

import pytest
import torch

from devtools.samples import jpeg
from model.errors import ImageError
from model.precision import DeviceUnavailable
from model.serve.replica import MapWork, prepare_replica_model
from model.serve.wire import DeadlinePassed

COARSE, FINE = (112, 112), (32, 16)  # 2 x 2, then 13 x 13 positions


@pytest.fixture
def work(classifier):
    maps = MapWork(classifier, batch_size=4, cache_size=8, threads=1)
    yield maps
    maps.stop()


async def test_a_new_coarse_map_runs_at_a_fine_maps_pause_point(work):
    order = []

    async def ask(name, photo, levels):
        async for result in work.explain(photo, levels, timeout_s=300):
            order.append((name, result.patch, result.final))
            if name == "first" and not result.final:
                started_second.set()

    started_second = asyncio.Event()
    first = asyncio.create_task(ask("first", jpeg(seed=1), [COARSE, FINE]))
    await started_second.wait()
    await asyncio.sleep(0.3)  # the first one's fine map is under way
    await ask("second", jpeg(seed=2), [COARSE, (112, 56)])
    await first
    assert order.index(("second", 112, False)) < order.index(("first", 32, True)), order
    assert work.pauses >= 1


async def test_the_finest_map_from_cache_skips_the_coarse_one_and_bad_bytes_are_an_image_error(work):
    photo = jpeg(seed=3)
    first = [r async for r in work.explain(photo, [COARSE, (112, 56)], timeout_s=300)]
    again = [r async for r in work.explain(photo, [COARSE, (112, 56)], timeout_s=300)]
    assert [r.patch for r in first] == [112, 112] and [r.final for r in first] == [False, True]
    assert len(again) == 1 and again[0].final and again[0].cached
    meta, arrays = again[0].frame_parts()
    assert meta["final"] and arrays["occlusion_map"].shape == (3, 3) and isinstance(meta["probability"], float)
    with pytest.raises(ImageError):
        _ = [r async for r in work.explain(b"not a photo", [COARSE], timeout_s=300)]


async def test_work_past_its_deadline_is_dropped(work):
    with pytest.raises(DeadlinePassed):
        _ = [r async for r in work.explain(jpeg(seed=4), [COARSE, FINE], timeout_s=0.0)]


def test_devices_and_precisions_it_cannot_serve_are_refused_clearly(classifier):
    with pytest.raises(ValueError, match="precision"):
        prepare_replica_model(classifier, "cpu", "fp16", threads=1)
    with pytest.raises(ValueError, match="device"):
        prepare_replica_model(classifier, "tpu", "fp32", threads=1)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="cuda"):
            prepare_replica_model(classifier, "cuda", "fp32", threads=1)


def test_a_replica_prepares_its_model_by_the_bots_rules(classifier):
    description = prepare_replica_model(classifier, "cpu", "fp32", threads=1)
    assert "fp32" in description and classifier.precision == "fp32"
