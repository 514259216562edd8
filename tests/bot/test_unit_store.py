"""The photo store: last photo per chat and button keys survive closing and reopening the file; a key is found
only by the chat it was made for, and one chat's photo never moves to another chat."""
import sqlite3

from bot.handlers.buttons import SECRET_FILE, WhyData
from bot.state.store import PhotoStore, StoredAnswer, StoredPhoto


def test_last_photo_and_button_key_survive_reopen(tmp_path):
    store = PhotoStore.in_dir(tmp_path / "data")
    first = StoredPhoto("file-id-1", "uniq-1", 10)
    second = StoredPhoto("file-id-2", "uniq-2", 11)
    key1 = store.remember(chat_id=5, photo=first)
    key2 = store.remember(chat_id=5, photo=second)
    store.remember(chat_id=6, photo=first)
    store.close()

    reopened = PhotoStore.in_dir(tmp_path / "data")  # the same secret, kept in DATA_DIR
    assert reopened.last_photo(5) == second
    assert reopened.last_photo(6) == first
    assert reopened.last_photo(7) is None
    assert reopened.by_key(5, key1).file_id == "file-id-1"
    assert reopened.by_key(5, key2).file_id == "file-id-2"
    assert reopened.by_key(5, "nope") is None
    reopened.close()
    assert (tmp_path / "data" / SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_photo_and_its_answer_are_kept_together(tmp_path):
    store = PhotoStore.in_dir(tmp_path / "data")
    answer = StoredAnswer("saree", 0.91, "c" * 64)
    key = store.remember(chat_id=5, photo=StoredPhoto("file-id-1", "uniq-1", 10), answer=answer)
    store.close()
    reopened = PhotoStore.in_dir(tmp_path / "data")
    assert reopened.answer(5, key) == answer
    assert reopened.by_key(5, key).file_id == "file-id-1"
    reopened.close()


def test_button_key_fits_callback_data_and_names_the_chat(tmp_path):
    store = PhotoStore.in_dir(tmp_path / "data")
    photo = StoredPhoto("f", "AgADBAADr6cxG2Y" * 10)
    key = store.key(5, photo)
    assert len(WhyData(key).encode().encode()) < 64
    assert key == store.key(5, photo) != store.key(6, photo)
    other_deployment = PhotoStore.in_dir(tmp_path / "elsewhere")
    assert other_deployment.key(5, photo) != key  # another secret: nobody else can compute our keys
    store.close()
    other_deployment.close()


def test_another_chat_neither_finds_nor_takes_a_chats_photo(tmp_path):
    """The attack of issue 25 §2: chat B presses chat A's key, and sends the same file itself."""
    store = PhotoStore.in_dir(tmp_path / "data")
    answer = StoredAnswer("saree", 0.9, "c" * 64)
    photo = StoredPhoto("file-a", "same-unique-id", 1)
    key_a = store.remember(chat_id=100, photo=photo, answer=answer)
    assert store.by_key(200, key_a) is None and store.answer(200, key_a) is None
    key_b = store.remember(chat_id=200, photo=StoredPhoto("file-b", "same-unique-id", 7), answer=answer)
    assert key_b != key_a
    assert store.by_key(100, key_a).file_id == "file-a"  # A's row is still A's
    assert store.forget_chat(100) == 3 and store.by_key(200, key_b).file_id == "file-b"
    store.close()


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
    assert store.last_photo(5) is None and store.by_key(5, old) is None and store.answer(5, old) is None
    assert store.by_key(6, kept) is not None and store.answer(6, kept) == answer
    assert store.forget_chat(6) == 3 and store.last_photo(6) is None and store.answer(6, kept) is None
    store.close()


def test_a_file_from_before_keys_named_the_chat_is_upgraded(tmp_path):
    """Old rows (keyed by the photo alone, pressable from any chat) are dropped; the last photos stay."""
    path = tmp_path / "data" / "bot.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photo_key (key TEXT PRIMARY KEY, file_id TEXT NOT NULL, "
                   "file_unique_id TEXT NOT NULL, created_at REAL NOT NULL, chat_id INTEGER)")
        db.execute("INSERT INTO photo_key VALUES ('abcdefabcdef', 'f', 'u', 1.0, 5)")
        db.execute("CREATE TABLE answer (key TEXT PRIMARY KEY, label TEXT NOT NULL, confidence REAL NOT NULL, "
                   "checkpoint_id TEXT NOT NULL)")
        db.execute("INSERT INTO answer VALUES ('abcdefabcdef', 'saree', 0.9, 'c')")
        db.execute("CREATE TABLE last_photo (chat_id INTEGER PRIMARY KEY, file_id TEXT NOT NULL, "
                   "file_unique_id TEXT NOT NULL, message_id INTEGER, updated_at REAL NOT NULL)")
        db.execute("INSERT INTO last_photo VALUES (5, 'f', 'u', 3, 1.0)")
    store = PhotoStore(path)
    assert store.by_key(5, "abcdefabcdef") is None and store.answer(5, "abcdefabcdef") is None
    assert store.last_photo(5) == StoredPhoto("f", "u", 3)
    key = store.remember(chat_id=5, photo=StoredPhoto("f9", "u9", 4))
    assert store.by_key(5, key).file_id == "f9"
    store.close()
    assert PhotoStore(path).by_key(5, key).file_id == "f9"  # reopening a new file drops nothing
