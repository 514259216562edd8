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
