"""A canary share of chats: the split is stable per chat and near the share, a canary chat's /help and answers
come from the candidate model (and its answers carry the candidate's checkpoint id), the rest get the main
model, /stats says so, and a bad CANARY_CHECKPOINT stops the start with one line."""
from __future__ import annotations

import pytest
from e2e_support import assert_prediction, expected_prediction

from bot.config import ConfigError
from bot.inference.canary import chat_fraction, serves_canary
from devtools.samples import jpeg
from model import load_classifier

ADMIN = 4242


@pytest.fixture
def candidate(four_class_checkpoint):
    return four_class_checkpoint


def test_the_split_is_stable_per_chat_and_near_the_share():
    chats = range(20_000)
    first = [serves_canary(chat, "salt-a", 0.1) for chat in chats]
    assert first == [serves_canary(chat, "salt-a", 0.1) for chat in chats]  # a chat keeps its model
    assert 0.09 <= sum(first) / len(first) <= 0.11
    other = [serves_canary(chat, "salt-b", 0.1) for chat in chats]  # a new candidate: a fresh sample
    assert 0.09 <= sum(other) / len(other) <= 0.11 and other != first
    assert all(0 <= chat_fraction(chat, "s") < 1 for chat in range(100))
    assert not any(serves_canary(chat, "s", 0.0) for chat in chats) and all(serves_canary(c, "s", 1.0) for c in chats)


def chats_by_model(salt: str, share: float) -> tuple[int, int]:
    canary = next(chat for chat in range(1000, 5000) if serves_canary(chat, salt, share))
    main = next(chat for chat in range(1000, 5000) if not serves_canary(chat, salt, share))
    return canary, main


async def help_for(fake_api, chat: int) -> str:
    mark = fake_api.mark()
    await fake_api.push(fake_api.command_update("/help", user_id=chat))
    return (await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == chat, after=mark, timeout=20)).text


async def test_canary_chats_get_the_candidate_and_the_others_the_main_model(
        fake_api, running_bot, classifier, candidate, tmp_path):
    candidate_model = load_classifier(candidate)
    canary_chat, main_chat = chats_by_model(candidate_model.checkpoint_id, 0.5)
    async with running_bot(CANARY_CHECKPOINT=str(candidate), CANARY_SHARE="0.5", ADMIN_USER_IDS=str(ADMIN),
                           FEEDBACK_DIR=str(tmp_path / "feedback")) as app:
        assert "lehenga" in await help_for(fake_api, canary_chat)
        assert "lehenga" not in await help_for(fake_api, main_chat)
        photo = jpeg(seed=11)
        for chat, model in ((canary_chat, candidate_model), (main_chat, classifier)):
            update = await fake_api.push(fake_api.photo_update(photo, user_id=chat))
            answer = await fake_api.wait_for_answer(update["message"], timeout=30)
            assert_prediction(answer, expected_prediction(model, photo))
            key = next(b["callback_data"] for row in answer.params["reply_markup"]["inline_keyboard"]
                       for b in row if b["callback_data"].startswith("why:"))[4:]
            stored = app.bot_data["services"].store.answer(chat, key)
            assert stored.checkpoint_id == model.checkpoint_id  # the answer carries the model that gave it
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/stats", user_id=ADMIN))
        stats = (await fake_api.wait_for_call("sendMessage", after=mark, timeout=20)).text
        assert f"Canary: checkpoint {candidate_model.checkpoint_id[:12]} for 50% of chats" in stats


async def test_a_bad_canary_checkpoint_stops_the_start(bot_settings, tmp_path):
    from bot.app import build_application

    broken = tmp_path / "candidate.pt"
    broken.write_bytes(b"garbage")
    app = build_application(bot_settings(CANARY_CHECKPOINT=str(broken)))
    with pytest.raises(ConfigError, match="CANARY_CHECKPOINT=.*cannot be served"):
        await app.initialize()
    await app.shutdown()


async def test_no_compute_thread_is_left_behind_by_a_failed_start(bot_settings, tmp_path):
    import threading

    from bot.app import build_application

    broken = tmp_path / "candidate.pt"
    broken.write_bytes(b"garbage")
    before = {thread for thread in threading.enumerate() if thread.name.startswith("compute")}
    app = build_application(bot_settings(CANARY_CHECKPOINT=str(broken)))
    with pytest.raises(ConfigError):
        await app.initialize()
    await app.shutdown()
    left = {thread for thread in threading.enumerate() if thread.name.startswith("compute")} - before
    assert not [thread for thread in left if thread.is_alive()]
