"""End to end: every kind of bad input gets a short friendly reply, and the user's next photo is answered."""
from __future__ import annotations

import logging

import pytest
from e2e_support import (
    album_lines,
    assert_line_prediction,
    assert_prediction,
    assert_short_notice,
    expected_prediction,
    percentages,
)

from devtools.fake_telegram import DOWNLOAD_LIMIT
from devtools.samples import PDF, TEXT_FILE, decompression_bomb, jpeg, one_pixel_png, png, truncated_jpeg

pytestmark = pytest.mark.timeout(60)

BAD_DOCUMENTS = {
    "pdf": lambda: dict(data=PDF, file_name="catalogue.pdf", mime_type="application/pdf"),
    "text file": lambda: dict(data=TEXT_FILE, file_name="notes.txt", mime_type="text/plain"),
    "text file posing as jpeg": lambda: dict(data=TEXT_FILE, file_name="photo.jpg", mime_type="image/jpeg"),
    "truncated jpeg": lambda: dict(data=truncated_jpeg(), file_name="cut.jpg", mime_type="image/jpeg"),
    "empty file": lambda: dict(data=b"", file_name="empty.jpg", mime_type="image/jpeg"),
    "1x1 image": lambda: dict(data=one_pixel_png(), file_name="dot.png", mime_type="image/png"),
    "decompression bomb": lambda: dict(data=decompression_bomb(), file_name="bomb.png", mime_type="image/png"),
    "over 20 MB": lambda: dict(data=jpeg(6), file_name="huge.jpg", mime_type="image/jpeg",
                               reported_size=DOWNLOAD_LIMIT + 5_000_000),
}


@pytest.mark.parametrize("kind", list(BAD_DOCUMENTS))
async def test_bad_file_gets_a_short_reply_and_the_next_photo_is_answered(fake_api, running_bot, classifier, kind,
                                                                         caplog):
    caplog.set_level(logging.INFO)
    photo = jpeg(seed=7)
    async with running_bot():
        mark = fake_api.mark()
        bad = await fake_api.push(fake_api.document_update(**BAD_DOCUMENTS[kind]()))
        chat_id = bad["message"]["chat"]["id"]
        notice = await fake_api.wait_for_call("sendMessage", lambda c: c.chat_id == chat_id, after=mark)
        assert_short_notice(notice)
        good = await fake_api.push(fake_api.photo_update(photo))
        answer = await fake_api.wait_for_answer(good["message"])
    assert_prediction(answer, expected_prediction(classifier, photo))
    assert len(fake_api.find_calls("sendMessage", lambda c: c.chat_id == chat_id, after=mark)) == 2, \
        "exactly one notice for the bad file and one answer for the photo"
    operator_lines = [r.getMessage() for r in caplog.records if r.name.startswith("bot") and str(chat_id) in r.getMessage()]
    assert len(operator_lines) >= 2, "the operator log has a line for the bad file (and one for the photo)"


async def test_file_over_the_download_limit_is_not_downloaded(fake_api, running_bot):
    async with running_bot():
        mark = fake_api.mark()
        await fake_api.push(fake_api.document_update(**BAD_DOCUMENTS["over 20 MB"]()))
        notice = await fake_api.wait_for_call("sendMessage", after=mark)
    assert "20" in notice.text and "MB" in notice.text, f"say what the limit is: {notice.text!r}"
    assert not fake_api.find_calls("FILE", after=mark)


async def test_one_bad_file_in_an_album_fails_alone(fake_api, running_bot, classifier):
    pictures = [png(1), png(2)]
    album = [dict(data=pictures[0], file_name="a.png"), BAD_DOCUMENTS["truncated jpeg"](),
             dict(data=pictures[1], file_name="c.png")]
    async with running_bot():
        mark = fake_api.mark()
        updates = []
        for document in album:  # an album of files: three messages with one media_group_id
            update = fake_api.document_update(**document)
            update["message"]["media_group_id"] = "mixed"
            updates.append(await fake_api.push(update))
        answer = await fake_api.wait_for_answer(updates[0]["message"], after=mark)
    # One answer for the album (bot.handlers.albums): the bad file has its own line, the others their products.
    (only,) = fake_api.find_calls("sendMessage", after=mark)
    assert only is answer or only.result["message_id"] == answer.result["message_id"]
    first, bad, third = album_lines(answer)
    for picture, line in zip(pictures, (first, third)):
        assert_line_prediction(line, expected_prediction(classifier, picture))
    assert bad.startswith("#2 ") and "image" in bad and not percentages(bad), bad


async def test_file_refused_by_get_file_without_a_declared_size(fake_api, running_bot):
    async with running_bot():
        mark = fake_api.mark()
        update = fake_api.document_update(**BAD_DOCUMENTS["over 20 MB"]())
        del update["message"]["document"]["file_size"]  # Telegram may leave it out; getFile still refuses
        await fake_api.push(update)
        notice = await fake_api.wait_for_call("sendMessage", after=mark)
    assert_short_notice(notice)
    assert fake_api.find_calls("getFile", ok=False, after=mark), "getFile was never tried"
