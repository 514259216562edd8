"""The photo store: last photo per chat and button keys survive closing and reopening the file."""
from bot.store import PhotoStore, StoredAnswer, StoredPhoto, photo_key


def test_last_photo_and_button_key_survive_reopen(tmp_path):
    store = PhotoStore.in_dir(tmp_path / "data")
    first = StoredPhoto("file-id-1", "uniq-1", 10)
    second = StoredPhoto("file-id-2", "uniq-2", 11)
    key1 = store.remember(chat_id=5, photo=first)
    key2 = store.remember(chat_id=5, photo=second)
    store.remember(chat_id=6, photo=first)
    store.close()

    reopened = PhotoStore.in_dir(tmp_path / "data")
    assert reopened.last_photo(5) == second
    assert reopened.last_photo(6) == first
    assert reopened.last_photo(7) is None
    assert reopened.by_key(key1).file_id == "file-id-1"
    assert reopened.by_key(key2).file_id == "file-id-2"
    assert reopened.by_key("nope") is None
    reopened.close()


def test_photo_and_its_answer_are_kept_together(tmp_path):
    store = PhotoStore.in_dir(tmp_path / "data")
    answer = StoredAnswer("saree", 0.91, "c" * 64)
    key = store.remember(chat_id=5, photo=StoredPhoto("file-id-1", "uniq-1", 10), answer=answer)
    store.close()
    reopened = PhotoStore.in_dir(tmp_path / "data")
    assert reopened.answer(key) == answer
    assert reopened.by_key(key).file_id == "file-id-1"
    reopened.close()


def test_button_key_fits_callback_data():
    key = photo_key("AgADBAADr6cxG2Y" * 10)
    assert len(f"why:{key}".encode()) < 64
    assert key == photo_key("AgADBAADr6cxG2Y" * 10) != photo_key("other")


def test_an_earlier_message_does_not_replace_a_later_one(tmp_path):
    """An album's photos finish in any order: the chat's latest photo is the last one the user sent."""
    store = PhotoStore.in_dir(tmp_path / "data")
    store.remember(chat_id=5, photo=StoredPhoto("f3", "u3", 13))
    store.remember(chat_id=5, photo=StoredPhoto("f2", "u2", 12))
    assert store.last_photo(5).message_id == 13
    store.remember(chat_id=5, photo=StoredPhoto("f4", "u4", 14))
    assert store.last_photo(5).message_id == 14
    store.close()


def test_purge_and_forget_delete_rows_by_age_and_by_chat(tmp_path):
    now = [1_000_000.0]
    store = PhotoStore.in_dir(tmp_path / "data", clock=lambda: now[0])
    answer = StoredAnswer("saree", 0.9, "c" * 64)
    old = store.remember(chat_id=5, photo=StoredPhoto("f1", "u1", 1), answer=answer)
    now[0] += 10
    kept = store.remember(chat_id=6, photo=StoredPhoto("f2", "u2", 1), answer=answer)
    assert store.purge(max_age_s=5) == 3  # chat 5's last photo, its key and its answer
    assert store.last_photo(5) is None and store.by_key(old) is None and store.answer(old) is None
    assert store.by_key(kept) is not None and store.answer(kept) == answer
    assert store.forget_chat(6) == 3 and store.last_photo(6) is None and store.answer(kept) is None
    store.close()


def test_a_file_from_before_photo_keys_had_a_chat_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "data" / "bot.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photo_key (key TEXT PRIMARY KEY, file_id TEXT NOT NULL, "
                   "file_unique_id TEXT NOT NULL, created_at REAL NOT NULL)")
        db.execute("INSERT INTO photo_key VALUES ('abc', 'f', 'u', 1.0)")
    store = PhotoStore(path)
    assert store.by_key("abc").file_id == "f"
    key = store.remember(chat_id=5, photo=StoredPhoto("f9", "u9", 3))
    assert store.forget_chat(5) == 2 and store.by_key(key) is None and store.by_key("abc") is not None
    store.close()
