"""The journal of accepted updates, with an injected clock: accepted once, done once, resumed while young,
closed when too old, set aside when in progress at two crashes (the poison-pill rule), purged after the
retention period; a journal that cannot be written refuses the update (it is not confirmed to Telegram)."""
import asyncio
import sqlite3

import pytest
from telegram import Update

from bot.state.journal import MAX_CRASHES, SCHEMA, Journal, JournalingQueue, JournalUnwritable


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def photo_update(update_id: int, chat_id: int = 5) -> Update:
    return Update.de_json({
        "update_id": update_id,
        "message": {"message_id": 10 + update_id, "date": 0, "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "U"},
                    "photo": [{"file_id": f"f{update_id}", "file_unique_id": f"u{update_id}", "width": 320,
                               "height": 240}]},
    }, None)


def test_accepted_once_and_resumed_until_done(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "bot.sqlite3", clock)
    assert journal.accept(photo_update(1)) and journal.accept(photo_update(2))
    assert not journal.accept(photo_update(1))  # Telegram sent it again: not a second request
    journal.done(2)
    resumed = journal.resume(max_age_s=3600)
    assert [entry.update_id for entry in resumed] == [1]
    assert Update.de_json(__import__("json").loads(resumed[0].update_json), None).message.photo[0].file_id == "f1"
    assert journal.open_count() == 1


def test_an_entry_past_the_age_limit_is_closed_not_resumed(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "bot.sqlite3", clock)
    journal.accept(photo_update(1))
    clock.now += 7200
    journal.accept(photo_update(2))
    clock.now += 60
    assert [entry.update_id for entry in journal.resume(max_age_s=3600)] == [2]
    assert journal.open_count() == 1  # 1 was closed, so it is never resumed later either
    assert [entry.update_id for entry in journal.resume(max_age_s=1e9)] == [2]


def test_only_an_update_in_progress_at_a_crash_is_charged_and_set_aside_at_the_second(tmp_path):
    journal = Journal(tmp_path / "bot.sqlite3", Clock())
    for update_id in (1, 2, 3):
        journal.accept(photo_update(update_id))
    journal.start(1)  # a handler runs 1 when the process dies; 2 and 3 wait in the queue
    first = journal.resume_all(max_age_s=3600)
    assert [(e.update_id, e.crashes) for e in first.resumed] == [(1, 1), (2, 0), (3, 0)] and first.set_aside == []
    journal.start(1)
    journal.start(2)
    journal.put_back(2)  # a clean stop cut 2 short: not charged
    second = journal.resume_all(max_age_s=3600)
    assert MAX_CRASHES == 2
    assert [(e.update_id, e.crashes, e.kind, e.chat_id) for e in second.set_aside] == [(1, 2, "photo", 5)]
    assert [(e.update_id, e.crashes) for e in second.resumed] == [(2, 0), (3, 0)]
    for _ in range(5):  # the bystanders keep their chances however often the bot restarts
        assert [e.update_id for e in journal.resume(max_age_s=3600)] == [2, 3]
    assert journal.open_count() == 2


def test_a_journal_from_before_the_poison_pill_columns_opens(tmp_path):
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO journal (update_id, chat_id, kind, received_at, update_json) VALUES (1, 5, 'photo', ?, ?)",
               (Clock().now, photo_update(1).to_json()))
    db.commit()
    db.close()
    journal = Journal(tmp_path / "bot.sqlite3", Clock())
    assert [(e.update_id, e.crashes) for e in journal.resume(max_age_s=3600)] == [(1, 0)]


async def test_a_full_journal_refuses_the_update_instead_of_dropping_it(tmp_path):
    queue = JournalingQueue()
    queue.journal = Journal(tmp_path / "bot.sqlite3", Clock())
    await queue.put(photo_update(1))
    pages = queue.journal._db.execute("PRAGMA page_count").fetchone()[0]
    queue.journal._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full: no new page can be written
    big = [photo_update(update_id) for update_id in range(2, 200)]
    with pytest.raises(JournalUnwritable):
        for update in big:
            await queue.put(update)
    queued = queue.qsize()
    assert 1 <= queued < len(big) + 1  # what was written is queued; the first refused update is not
    queue.journal._db.execute("PRAGMA max_page_count = 1073741823")  # space again: Telegram's redelivery is taken
    refused = big[queued - 1]
    await queue.put(refused)
    assert queue.qsize() == queued + 1


def test_progress_and_purge(tmp_path):
    clock = Clock()
    journal = Journal(tmp_path / "bot.sqlite3", clock)
    journal.accept(photo_update(1))
    journal.accept(photo_update(2))
    journal.set_progress(1, 777)
    assert journal.progress(1) == 777 and journal.progress(2) is None
    journal.done(1)
    clock.now += 100
    assert journal.purge(max_age_s=50) == 1  # the finished one; the open one stays whatever its age
    assert journal.progress(1) is None and journal.open_count() == 1


def test_the_journal_survives_reopening(tmp_path):
    Journal(tmp_path / "bot.sqlite3", Clock()).accept(photo_update(3))
    assert [e.update_id for e in Journal(tmp_path / "bot.sqlite3", Clock()).resume(3600)] == [3]


async def test_the_queue_writes_before_it_queues_and_drops_repeats(tmp_path):
    queue = JournalingQueue()
    queue.journal = Journal(tmp_path / "bot.sqlite3", Clock())
    await queue.put(photo_update(1))
    assert queue.journal.open_count() == 1 and queue.qsize() == 1
    await queue.put(photo_update(1))  # the same update again
    assert queue.qsize() == 1
    await queue.put("not an update")  # PTB's own stop signal passes through untouched
    assert queue.qsize() == 2
    await asyncio.wait_for(queue.get(), 1)
