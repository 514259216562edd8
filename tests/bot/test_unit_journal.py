"""The journal of accepted updates, with an injected clock: accepted once, done once, resumed while young,
closed when too old or tried too often, purged after the retention period."""
import asyncio

from telegram import Update

from bot.journal import MAX_ATTEMPTS, Journal, JournalingQueue


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


def test_an_update_that_never_finishes_is_given_up_after_its_attempts(tmp_path):
    journal = Journal(tmp_path / "bot.sqlite3", Clock())
    journal.accept(photo_update(1))
    attempts = [len(journal.resume(max_age_s=3600)) for _ in range(MAX_ATTEMPTS + 1)]
    assert attempts == [1] * (MAX_ATTEMPTS - 1) + [0, 0]


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
