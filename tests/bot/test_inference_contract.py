"""One contract (bot.inference.contract.InferenceBackend), two backends: the same cases run against the in-process scheduler
and against the gateway to a real local Ray Serve cluster (``python -m model serve``, one per module, with two
Explainer replicas and a canary). Classify, admission limits with a chat's fair share of the map queue, maps
coarse to fine with the final one last, a cached repeat, a "Why not …?" map, canary routing, stats, /forget,
reload (a bad file refused, a good one served) and stop.
"""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from bot.config import Settings
from bot.inference.checkpoints import ModelFiles
from bot.inference.contract import CANARY, MAIN, Busy, Stopping
from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(600)

LEVELS = [(112, 112), (112, 56)]
SHARE = 0.5
LIMITS = {"queue_size": 6, "per_chat_queue": 4, "why_queue_size": 4}  # a chat's share of the map queue: 2


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_checkpoint, four_class_checkpoint):
    """The main checkpoint as a file of its own (the reload case writes over it) and the canary's."""
    folder = tmp_path_factory.mktemp("contract")
    main = folder / "model.pt"
    shutil.copyfile(tiny_checkpoint, main)
    return ModelFiles(main, four_class_checkpoint, SHARE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, files):
    pytest.importorskip("ray", reason="the cluster backend needs the cluster extra")
    from devtools.serve_process import ServeProcess, write_token

    token = write_token(tmp_path_factory.mktemp("token") / "auth_token", "contract-token-" + os.urandom(8).hex())
    head = ServeProcess(files.main, token, tmp_path_factory.mktemp("cluster") / "head.log",
                        ["--cpus", "2", "--replica-cpus", "0.4", "--classify-replicas", "1", "--explain-replicas", "2",
                         "--max-batch-wait-ms", "5", "--canary-checkpoint", str(files.canary)]).start()
    try:
        yield head, head.inference_token_file  # the gateway's own token (python -m model serve wrote it), not Ray's
    finally:
        head.stop()


@pytest.fixture(params=["local", "cluster"])
async def make_backend(request, files):
    made = []

    async def make(**limits):
        limits = {**LIMITS, **limits}
        if request.param == "local":
            from bot.inference.local import InferenceScheduler
            from model import load_classifier

            settings = Settings(token="test", warm_up_batch=0, precision="fp32", runtime="torch", **limits)
            backend = InferenceScheduler(load_classifier(files.main), settings.scheduler_config(), files=files)
        else:
            from bot.inference.cluster import ClusterInference
            from model.serve import wire

            head, token = request.getfixturevalue("cluster")
            backend = ClusterInference(head.address, wire.read_token_file(token), deadline_s=60, why_deadline_s=120,
                                       canary_share=SHARE, **limits)
        backend.start()
        made.append(backend)
        async with asyncio.timeout(300):
            await backend.ready()
        return backend

    yield make
    for backend in made:
        await backend.stop()


def chat_of(backend, model: str) -> int:
    return next(chat for chat in range(1, 1000) if backend.model_for(chat) == model)


async def test_classify_on_the_model_of_each_chat(make_backend, files):
    backend = await make_backend()
    main_chat, canary_chat = chat_of(backend, MAIN), chat_of(backend, CANARY)
    assert backend.model_for(None) == MAIN and backend.models[CANARY].checkpoint_id != backend.classifier.checkpoint_id
    async with asyncio.timeout(120):
        main = await backend.classify(main_chat, jpeg(seed=1), backend.model_for(main_chat))
        with backend.reserve(canary_chat, backend.model_for(canary_chat)) as reservation:
            canary = await reservation.classify(jpeg(seed=1))
    assert main.label in backend.classifier.class_names and main.checkpoint_id == backend.classifier.checkpoint_id
    assert canary.label in backend.models[CANARY].class_names and canary.checkpoint_id == backend.models[CANARY].checkpoint_id
    assert backend.queue_length() == 0
    assert {"forward", "mean_batch", "canary"} <= set(backend.stats_lines())


async def test_admission_refuses_at_once_and_keeps_room_for_other_chats(make_backend):
    backend = await make_backend(queue_size=7, per_chat_queue=5)
    with backend.reserve("a"), backend.reserve("a"), backend.reserve_explain("a"), backend.reserve_explain("a"):
        with pytest.raises(Busy, match="share"):
            backend.reserve_explain("a")  # a chat's fair share of the map queue (2 of 4) ...
        with backend.reserve("a"):
            with pytest.raises(Busy, match="chat a"):
                backend.reserve("a")  # ... and of the whole queue (PER_CHAT_QUEUE 5)
            with backend.reserve_explain("b"), backend.reserve("c"):  # another chat is still admitted
                with pytest.raises(Busy, match="requests queued"):
                    backend.reserve("d")  # QUEUE_SIZE 7
            assert backend.queue_length() == 5
    assert backend.queue_length() == 0


async def test_maps_coarse_to_fine_then_cached_then_why_not_from_the_kept_grid(make_backend):
    backend = await make_backend()
    photo = jpeg(seed=2)
    async with asyncio.timeout(300):
        first = [e async for e in backend.explain(7, photo, LEVELS)]
        again = [e async for e in backend.explain(7, photo, LEVELS)]
        other = first[-1].others[0][0]
        why_not = [e async for e in backend.explain(7, photo, LEVELS[-1:], target=other)]
    assert [(e.patch, e.stride, e.final, e.cached) for e in first] == [(112, 112, False, False), (112, 56, True, False)]
    assert [(e.final, e.cached) for e in again] == [(True, True)] and again[0].png == first[-1].png
    assert len(why_not) == 1 and why_not[0].label == backend.classifier.class_names[other] and why_not[0].cached
    backend.forget(7)
    assert len(backend.drawing.grids) == 0 and len(backend.drawing.rendered) == 0
    with pytest.raises(Exception) as bad:
        _ = [e async for e in backend.explain(7, b"not a photo", LEVELS)]
    assert type(bad.value).__name__ == "ImageError"


async def test_stop_refuses_new_work(make_backend):
    backend = await make_backend()
    await backend.stop()
    with pytest.raises(Stopping):
        backend.reserve("late")
    with pytest.raises(Stopping):
        backend.reserve_explain("late")


async def test_reload_refuses_a_bad_file_then_serves_a_good_one(make_backend, files, tiny_checkpoint,
                                                                four_class_checkpoint):
    backend = await make_backend()
    before = backend.classifier.checkpoint_id
    try:
        files.main.write_bytes(b"not a checkpoint")
        async with asyncio.timeout(300):
            refused = await backend.reload("test")
        assert not refused.ok and "refused" in refused.text and backend.classifier.checkpoint_id == before
        assert (await backend.classify(1, jpeg(seed=3), MAIN)).checkpoint_id == before
        shutil.copyfile(four_class_checkpoint, files.main)
        async with asyncio.timeout(300):
            served = await backend.reload("test")
        assert served.ok, served.text
        assert backend.classifier.class_names == ["kurti", "lehenga", "saree", "shirt"]
        prediction = await backend.classify(1, jpeg(seed=3), MAIN)
        assert prediction.checkpoint_id == backend.classifier.checkpoint_id != before
    finally:
        shutil.copyfile(tiny_checkpoint, files.main)


def test_the_gateway_bot_serves_a_photo_and_a_map_without_torch(cluster, files, tmp_path):
    """The whole bot in gateway mode (INFERENCE_ADDRESS), in its own process against the fake Bot API: a photo is
    answered and a /why's maps arrive, and neither torch nor ray was ever imported there."""
    import subprocess
    import sys

    head, token = cluster
    script = f"""
import asyncio, pathlib, sys
from devtools.bot_env import settings_env
from devtools.fake_telegram import FakeTelegram
from devtools.samples import jpeg
from bot.app import build_application
from bot.config import Settings
async def main():
    fake = await FakeTelegram().start()
    data = pathlib.Path({str(tmp_path)!r})
    env = settings_env(fake, pathlib.Path({str(files.main)!r}), data / "data", INFERENCE_ADDRESS={head.address!r},
                       INFERENCE_TOKEN_FILE={str(token)!r})
    app = build_application(Settings.from_env(environ=env, env_file=data / "no.env"))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=1)
    update = await fake.push(fake.photo_update(jpeg(seed=4), chat_id=11))
    answer = await fake.wait_for_answer(update["message"], timeout=120)
    mark = fake.mark()
    await fake.push(fake.command_update("/why", chat_id=11, reply_to=update["message"]))
    fine = await fake.wait_for_call("editMessageMedia", lambda c: c.params.get("chat_id") == 11, after=mark, timeout=240)
    await app.updater.stop()
    await app.stop()
    await app.shutdown()
    await fake.stop()
    print("RESULT", bool(answer.text), bool(fine), "torch" in sys.modules, "ray" in sys.modules)
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT")), "")
    assert line, done.stdout + done.stderr[-3000:]
    assert line.split()[1:] == ["True", "True", "False", "False"], line
