"""A replica's work (model.serve.replica.ReplicaWork: the serving core on its engines), without Ray: priorities,
deadlines, cache, the canary beside the main model, a reload in flight."""
from __future__ import annotations

import asyncio

import pytest
import torch

from devtools.samples import jpeg
from model.errors import ImageError
from model.precision import DeviceUnavailable
from model.serve.replica import ReplicaWork, prepare_replica_model, replica_engine
from model.serve.wire import DeadlinePassed
from model.serving.compute import ComputeConfig

COARSE, FINE = (112, 112), (32, 16)  # 2 x 2, then 13 x 13 positions


CONFIG = ComputeConfig(max_batch=4, max_batch_wait_s=0.005, decode_workers=1, threads=1, classify_workers=1,
                       explain_batch_size=4, explain_cache_size=8, warm_up_batch=0)


@pytest.fixture
async def work(classifier):
    replica = ReplicaWork({"main": replica_engine(classifier, "cpu", "fp32", threads=1)}, CONFIG)
    yield replica
    await replica.stop()


async def explain(work, photo, levels, timeout_s=300, model="main"):
    return [meta async for meta, _ in work.explain(photo, levels, model, timeout_s)]


async def test_a_new_coarse_map_runs_at_a_fine_maps_pause_point(work):
    order = []

    async def ask(name, photo, levels):
        async for result, _ in work.explain(photo, levels, "main", timeout_s=300):
            order.append((name, result["patch"], result["final"]))
            if name == "first" and not result["final"]:
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
    first = await explain(work, photo, [COARSE, (112, 56)])
    again = [parts async for parts in work.explain(photo, [COARSE, (112, 56)], "main", 300)]
    assert [r["patch"] for r in first] == [112, 112] and [r["final"] for r in first] == [False, True]
    assert len(again) == 1 and again[0][0]["final"] and again[0][0]["cached"]
    meta, arrays = again[0]
    assert meta["final"] and arrays["occlusion_map"].shape == (3, 3) and isinstance(meta["probability"], float)
    with pytest.raises(ImageError):
        await explain(work, b"not a photo", [COARSE])


async def test_work_past_its_deadline_is_dropped(work):
    with pytest.raises(DeadlinePassed):
        await explain(work, jpeg(seed=4), [COARSE, FINE], timeout_s=0.0)


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


async def test_a_replica_serves_the_canary_beside_the_main_model_and_a_reload_swaps_in_a_new_one(tiny_checkpoint):
    from model.predict import load_checked

    main = replica_engine(load_checked(tiny_checkpoint), "cpu", "fp32", threads=1)
    canary = replica_engine(load_checked(tiny_checkpoint), "cpu", "fp32", threads=1)
    work = ReplicaWork({"main": main, "canary": canary}, CONFIG)
    try:
        photo = jpeg(seed=9)
        prediction, batch, checkpoint = await work.classify(photo, "canary", lambda: False)
        assert checkpoint == canary.checkpoint_id and batch == 1 and prediction["label"] in main.class_names
        assert work.model("unknown") == "main"
        replacement = replica_engine(load_checked(tiny_checkpoint), "cpu", "fp32", threads=1)
        running = asyncio.create_task(explain(work, photo, [COARSE, FINE]))
        work.load({"main": replacement})
        assert work.engines["main"] is replacement
        assert [meta["final"] for meta in await running] == [False, True]  # finished on the model it started with
    finally:
        await work.stop()
