"""End to end, as a hostile user would try it (issue 25 §2, §3): button data copied into another chat, another
user's presses, /why by reply to another bot's message, presses past the limits, /forget in a group."""
from __future__ import annotations

import sqlite3

import pytest
from e2e_support import file_ids, inline_buttons

from devtools.samples import jpeg
from model.inbox import Inbox, chat_hash, user_hash

pytestmark = pytest.mark.timeout(90)

VICTIM, ATTACKER = 1001, 2002  # private chats (chat id = user id)
GROUP = -100777
EXPIRED = "I no longer have that photo. Please send it again."
PHOTO_GONE = "I no longer have that photo. Send it again to give feedback."


def data_of(call, text_part: str) -> str:
    found = [b["callback_data"] for b in inline_buttons(call) if text_part in b["text"]]
    assert found, f"no button with {text_part!r} under {call}"
    return found[0]


async def send_photo(fake_api, seed: int, user_id: int, **where):
    update = await fake_api.push(fake_api.photo_update(jpeg(seed), user_id=user_id, **where))
    answer = await fake_api.wait_for_answer(update["message"], timeout=30)
    return update["message"], answer


async def press(fake_api, message: dict, data: str, user_id: int | None = None):
    """Press ``data`` on the bot's ``message``; returns the answerCallbackQuery call."""
    mark = fake_api.mark()
    current = fake_api.messages[(message["chat"]["id"], message["message_id"])]
    update = await fake_api.push(fake_api.callback_update(data, current, user_id=user_id))
    query_id = update["callback_query"]["id"]
    return await fake_api.wait_for_call("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id,
                                        after=mark, timeout=30)


def photo_rows(data_dir, chat_id: int) -> list[tuple]:
    with sqlite3.connect(data_dir / "bot.sqlite3") as db:
        return db.execute("SELECT key, file_id FROM photo_key WHERE chat_id = ? ORDER BY key", (chat_id,)).fetchall()


async def test_another_chats_button_data_gets_no_map_and_no_record(fake_api, running_bot, tmp_path):
    data_dir, inbox_dir = tmp_path / "data", tmp_path / "fb"
    async with running_bot(data_dir=data_dir, FEEDBACK_DIR=str(inbox_dir)):
        victim_photo, victim_answer = await send_photo(fake_api, 1, VICTIM)
        _, attacker_answer = await send_photo(fake_api, 2, ATTACKER)
        # The victim's own "Why?" works, so the attacker has real "Why not …?" data to copy as well.
        mark = fake_api.mark()
        await press(fake_api, victim_answer.result, data_of(victim_answer, "Why"))
        victim_map = await fake_api.wait_for_call("editMessageMedia", lambda c: c.chat_id == VICTIM, after=mark, timeout=60)
        victims_rows = photo_rows(data_dir, VICTIM)
        stolen = [data_of(victim_answer, "Why"), data_of(victim_answer, "Right"), data_of(victim_answer, "Wrong"),
                  data_of(victim_answer, "Wrong").replace(":no", ":1"), data_of(victim_answer, "Wrong").replace(":no", ":x")]
        stolen += [b["callback_data"] for b in inline_buttons(victim_map) if b["callback_data"].startswith("wn:")]
        mark = fake_api.mark()
        for data in stolen:
            answered = await press(fake_api, attacker_answer.result, data)
            assert answered.params.get("text") in (EXPIRED, PHOTO_GONE), (data, answered)
        own_key = data_of(attacker_answer, "Why").split(":")[1]
        answered = await press(fake_api, attacker_answer.result, f"wn:{own_key}:999")  # a class the model lacks
        assert answered.params.get("text") == EXPIRED
        # The attacker sends the victim's very file too: that makes the attacker a row of their own, nothing more.
        resent = await fake_api.push(fake_api.photo_update(jpeg(1), user_id=ATTACKER))
        await fake_api.wait_for_answer(resent["message"], timeout=30)
    assert not fake_api.find_calls("sendPhoto", lambda c: c.chat_id == ATTACKER, after=mark), "a map for the attacker"
    assert not fake_api.find_calls("sendMessage", lambda c: "went wrong" in c.text, after=mark)
    assert not fake_api.find_calls("getFile", lambda c: c.params["file_id"] in file_ids(victim_photo), after=mark)
    assert not (inbox_dir / "records").exists() or Inbox(inbox_dir).records() == []
    assert photo_rows(data_dir, VICTIM) == victims_rows, "the victim's row moved or changed"


async def test_another_user_in_a_group_presses_as_themselves_and_not_from_elsewhere(fake_api, running_bot, tmp_path):
    inbox_dir = tmp_path / "fb"
    in_group = dict(chat_id=GROUP, chat_type="group")
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        _, group_answer = await send_photo(fake_api, 3, 31, caption="@ProductIdBot ?", **in_group)
        right = data_of(group_answer, "Right")
        answered = await press(fake_api, group_answer.result, right, user_id=32)  # a member who did not send it
        assert answered.params["text"].startswith("Thanks — noted as")
        # The same member copies the group's data into their private chat, onto an answer of their own.
        _, own_answer = await send_photo(fake_api, 4, 32)
        answered = await press(fake_api, own_answer.result, right)
        assert answered.params.get("text") == PHOTO_GONE
    inbox = Inbox(inbox_dir)
    [record] = inbox.records()
    assert record.user == user_hash(32, inbox.salt()) != user_hash(31, inbox.salt())  # who pressed, not who sent
    assert record.chat == chat_hash(GROUP, inbox.salt())


async def test_why_by_reply_reads_keys_only_from_this_bots_messages(fake_api, running_bot):
    async with running_bot():
        first, first_answer = await send_photo(fake_api, 5, VICTIM)
        second, _ = await send_photo(fake_api, 6, VICTIM)
        other_bot = {"message_id": 9999, "date": first_answer.result["date"], "chat": first_answer.result["chat"],
                     "from": {"id": 6000002, "is_bot": True, "first_name": "Other", "username": "OtherBot"},
                     "text": "press me", "reply_markup": first_answer.params["reply_markup"]}  # our data, their message
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", user_id=VICTIM, reply_to=other_bot))
        await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == VICTIM, after=mark, timeout=60)
    fetched = {c.params["file_id"] for c in fake_api.find_calls("getFile", after=mark)}
    assert fetched & file_ids(second) and not fetched & file_ids(first), "the other bot's keyboard was trusted"


async def test_presses_past_the_per_photo_limit_are_refused_with_a_clear_answer(fake_api, running_bot, tmp_path):
    from bot.state.feedback_records import FeedbackLimits

    inbox_dir = tmp_path / "fb"
    async with running_bot(FEEDBACK_DIR=str(inbox_dir)):
        _, answer = await send_photo(fake_api, 7, VICTIM)
        right = data_of(answer, "Right")
        texts = [(await press(fake_api, answer.result, right)).params.get("text")
                 for _ in range(FeedbackLimits.per_photo + 1)]
    assert all(text.startswith("Thanks") for text in texts[:-1]), texts
    assert "several times today" in texts[-1]
    assert len(Inbox(inbox_dir).records()) == FeedbackLimits.per_photo


async def test_forget_in_a_group_deletes_the_members_own_feedback_unless_an_admin_asks(fake_api, running_bot, tmp_path):
    data_dir, inbox_dir = tmp_path / "data", tmp_path / "fb"
    in_group = dict(chat_id=GROUP, chat_type="supergroup")
    member, admin = 41, 42
    async with running_bot(data_dir=data_dir, FEEDBACK_DIR=str(inbox_dir)):
        for seed, user in ((8, member), (9, admin)):
            _, answer = await send_photo(fake_api, seed, user, caption="@ProductIdBot ?", **in_group)
            answered = await press(fake_api, answer.result, data_of(answer, "Right"), user_id=user)
            assert answered.params["text"].startswith("Thanks")
        assert len(Inbox(inbox_dir).records()) == 2
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/forget@ProductIdBot", user_id=member, **in_group))
        said = (await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == GROUP, after=mark)).text
        assert "group admin" in said and "1 judgement" in said, said
        [left] = Inbox(inbox_dir).records()  # the admin's judgement stays, and so does the group's state
        assert photo_rows(data_dir, GROUP)
        fake_api.set_member_status(GROUP, admin, "administrator")
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/forget@ProductIdBot", user_id=admin, **in_group))
        said = (await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == GROUP, after=mark)).text
        assert "Done: I deleted this chat's last photo" in said and "1 judgement" in said, said
    assert Inbox(inbox_dir).records() == [] and Inbox(inbox_dir).photo_count() == 0
    assert photo_rows(data_dir, GROUP) == []
    asked = fake_api.find_calls("getChatMember")
    assert {c.params["user_id"] for c in asked} == {member, admin}
