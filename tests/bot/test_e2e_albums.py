"""End to end: an album (media group) gets one reply to its first photo with a numbered line per photo;
/why by reply to any of its photos explains that photo; per-photo feedback buttons; an album cut short by
a stop is answered, once and whole, at the next start."""
from __future__ import annotations

import asyncio

import pytest
from e2e_support import album_lines, assert_line_prediction, expected_prediction, file_ids

from devtools.samples import jpeg

pytestmark = pytest.mark.timeout(60)


def keyboard(call_or_message) -> list[list[tuple[str, str]]]:
    markup = (call_or_message.params if hasattr(call_or_message, "params") else call_or_message).get("reply_markup") or {}
    return [[(b["text"], b.get("callback_data", "")) for b in row] for row in markup.get("inline_keyboard", [])]


async def send_album(fake_api, photos: list[bytes], group: str = "album-1", **kwargs) -> list[dict]:
    updates = [fake_api.photo_update(photo, media_group_id=group, caption="my album" if i == 0 else None, **kwargs)
               for i, photo in enumerate(photos)]
    for update in updates:
        await fake_api.push(update)
    return [update["message"] for update in updates]


async def test_album_of_three_gets_one_reply_and_why_explains_the_photo_replied_to(fake_api, running_bot, classifier):
    photos = [jpeg(seed) for seed in range(3)]
    async with running_bot(ALBUM_WAIT_S="0.3"):
        mark = fake_api.mark()
        sent = await send_album(fake_api, photos)
        answer = await fake_api.wait_for_answer(sent[0], after=mark)
        # A round trip, so that a second reply would have shown up by now.
        await fake_api.push(fake_api.text_update("thanks"))
        await fake_api.wait_for_call("sendMessage", lambda c: c.params.get("text", "").startswith("Send me"), after=mark)
        replies = [c for c in fake_api.find_calls("sendMessage", after=mark) if c is not answer and not c.text.startswith("Send me")]
        why_mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", reply_to=sent[1]))
        heat_map = await fake_api.wait_for_call("sendPhoto", after=why_mark, timeout=30)
    assert replies == [], f"one reply per album, got more: {replies}"
    assert answer.text.startswith("3 photos:")
    lines = album_lines(answer)
    assert len(lines) == 3
    for photo, line in zip(photos, lines):
        assert_line_prediction(line, expected_prediction(classifier, photo))
    assert [row[0][0] for row in keyboard(answer)] == ["Why? #1", "Why? #2", "Why? #3"]
    fetched = {call.params["file_id"] for call in fake_api.find_calls("getFile", after=why_mark)}
    assert fetched & file_ids(sent[1]) and not fetched & (file_ids(sent[0]) | file_ids(sent[2])), fetched
    assert heat_map.reply_to == heat_map.params["reply_parameters"]["message_id"]


async def test_album_feedback_buttons_work_per_photo(fake_api, running_bot, tmp_path):
    from model.inbox import Inbox

    inbox_dir = tmp_path / "feedback"
    async with running_bot(ALBUM_WAIT_S="0.2", FEEDBACK_DIR=str(inbox_dir)):
        sent = await send_album(fake_api, [jpeg(5), jpeg(6)], group="a2")
        answer = await fake_api.wait_for_answer(sent[0])
        rows = keyboard(answer)
        assert [[text for text, _ in row] for row in rows] == [["Why? #1", "#1 ✓", "#1 ✗"], ["Why? #2", "#2 ✓", "#2 ✗"]]
        message = answer.result

        async def press(text: str):
            mark = fake_api.mark()
            current = fake_api.messages[(message["chat"]["id"], message["message_id"])]
            data = next(d for row in keyboard(current) for t, d in row if t == text)
            await fake_api.push(fake_api.callback_update(data, current))
            query = await fake_api.wait_for_call("answerCallbackQuery", after=mark)
            edit = await fake_api.wait_for_call("editMessageReplyMarkup", after=mark)
            return query, keyboard(edit)

        query, after_wrong = await press("#2 ✗")
        assert "(#2)" in query.params["text"]
        assert after_wrong[0] == rows[0], "photo #1's buttons must not change"
        assert after_wrong[1] == [rows[1][0]], "photo #2 keeps its Why? button"
        assert [t for t, _ in after_wrong[2]] == ["Kurti", "Saree", "Shirt"]
        query, after_choice = await press("Saree")
        assert query.params["text"] == "#2 Thanks — noted as saree"
        assert after_choice == [rows[0], [rows[1][0]], [("#2 Thanks — noted as saree", after_choice[2][0][1])]]
    (record,) = Inbox(inbox_dir).records()
    assert record.label == "saree"
    second_photo = {size["file_unique_id"] for size in sent[1]["photo"]}
    assert record.photo_id in second_photo, "the judgement of #2 must keep photo #2"
    stored = (inbox_dir / record.photo_file).read_bytes()
    assert stored in {fake_api.file_bytes(size["file_id"]) for size in sent[1]["photo"]}


async def test_group_album_addressed_in_its_first_caption_is_answered_whole(fake_api, running_bot):
    async with running_bot(ALBUM_WAIT_S="0.2"):
        updates = [fake_api.photo_update(jpeg(seed), chat_id=-500, chat_type="group", media_group_id="g1",
                                         caption="@ProductIdBot which?" if seed == 0 else None) for seed in range(3)]
        for update in updates:
            await fake_api.push(update)
        answer = await fake_api.wait_for_answer(updates[0]["message"])
    assert len(album_lines(answer)) == 3


async def test_an_album_cut_short_by_a_stop_is_answered_once_at_the_next_start(fake_api, running_bot, bot_settings,
                                                                              tmp_path, classifier):
    photos = [jpeg(seed) for seed in (7, 8, 9)]
    data_dir = tmp_path / "data"
    async with running_bot(bot_settings(data_dir, ALBUM_WAIT_S="30")) as app:
        mark = fake_api.mark()
        sent = await send_album(fake_api, photos, group="cut")
        albums = app.bot_data["services"].albums
        for _ in range(400):  # every photo classified; the reply waits for the album's quiet time
            open_albums = list(albums._open.values())
            if open_albums and len(open_albums[0].photos) == 3 and all(p.finished for p in open_albums[0].photos):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the album's photos were not classified")
        # What a crash (SIGKILL) now would leave: every photo of the album still open in the journal, so the
        # next start resumes them all; the stop below leaves the same (tests/bot/test_e2e_journal.py kills).
        journal = app.bot_data["services"].journal
        assert await asyncio.to_thread(journal.open_count) == 3
    assert not fake_api.find_calls("sendMessage", after=mark), "no partial answer before the stop"
    async with running_bot(bot_settings(data_dir, ALBUM_WAIT_S="0.2")):
        answer = await fake_api.wait_for_answer(sent[0], after=mark, timeout=20)
        await asyncio.sleep(0.5)  # a second reply would come within the album wait
    assert len(fake_api.find_calls("sendMessage", after=mark)) == 1
    for photo, line in zip(photos, album_lines(answer)):
        assert_line_prediction(line, expected_prediction(classifier, photo))
