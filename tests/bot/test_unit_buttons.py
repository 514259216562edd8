"""The button codecs and keys (bot/handlers/buttons.py): round trips under 64 bytes; forged, malformed, non-ASCII and
other-chat data refused; the secret made once, 0600, or taken from BUTTON_SECRET."""
from __future__ import annotations

import pytest

from bot.handlers.buttons import (
    KEY_CHARS,
    SECRET_FILE,
    ButtonKeys,
    FeedbackData,
    WhyData,
    WhyNotData,
    key_of_button,
    load_secret,
)

KEYS = ButtonKeys(b"s" * 32)
KEY = KEYS.key(1001, "AgADBAADr6cxG2Y")


def test_each_codec_round_trips_under_64_bytes():
    long_unique_id = "AgAD" + "x" * 200  # the key's length does not depend on the photo's id
    key = KEYS.key(-1001234567890123, long_unique_id)
    assert len(key) == KEY_CHARS
    for data in (WhyData(key), WhyNotData(key, 999), FeedbackData(key, "ok"), FeedbackData(key, "x"),
                 FeedbackData(key, "d"), FeedbackData(key, "no"), FeedbackData(key, "42")):
        encoded = data.encode()
        assert len(encoded.encode()) <= 64
        assert type(data).decode(encoded) == data
        assert key_of_button(encoded) == key
    assert FeedbackData(key, "42").class_index == 42 and FeedbackData(key, "ok").class_index is None


@pytest.mark.parametrize("junk", [
    None, 42, "", "why", "why:", f"why:{KEY}:", f"why:{KEY[:-1]}", f"why:{KEY}0", f"why:{KEY.upper()}",
    f"why:{KEY}\n", f" why:{KEY}", f"wn:{KEY}", f"wn:{KEY}:", f"wn:{KEY}:-1", f"wn:{KEY}:1.5", f"wn:{KEY}:01",
    f"wn:{KEY}:1234", f"wn:{KEY}:²", f"wn:{KEY}:٣", f"wn:{KEY}:１", f"fb:{KEY}:²", f"fb:{KEY}:yes", f"fb:{KEY}:",
    f"fb:{KEY}:ok:ok", "fb:0123456789ab:ok", f"fb:{KEY[:12]}/../x:ok", f"WHY:{KEY}", f"fb:{KEY}:٣",
])
def test_malformed_or_non_ascii_data_decodes_to_nothing(junk):
    """Old 12-hex keys, other prefixes, Unicode digits ("²" passes str.isdigit, and int() refuses it)."""
    assert WhyData.decode(junk) is None and WhyNotData.decode(junk) is None and FeedbackData.decode(junk) is None
    assert key_of_button(junk) is None


def test_encoding_what_no_codec_reads_back_is_a_bug():
    with pytest.raises(ValueError, match="malformed"):
        FeedbackData("not-a-key", "ok").encode()
    with pytest.raises(ValueError, match="malformed"):
        FeedbackData(KEY, "²").encode()
    with pytest.raises(ValueError, match="64 bytes"):
        WhyData("a" * 70).encode()


def test_a_key_names_its_chat_and_cannot_be_forged_without_the_secret():
    assert KEYS.matches(KEY, 1001, "AgADBAADr6cxG2Y")
    assert not KEYS.matches(KEY, 2002, "AgADBAADr6cxG2Y")  # another chat's key
    assert not KEYS.matches(KEY, 1001, "AgADother")
    assert not KEYS.matches("0" * KEY_CHARS, 1001, "AgADBAADr6cxG2Y")  # forged
    assert ButtonKeys(b"t" * 32).key(1001, "AgADBAADr6cxG2Y") != KEY  # another deployment's secret
    assert "s" * 32 not in repr(KEYS)
    with pytest.raises(ValueError):
        ButtonKeys(b"short")


def test_the_secret_is_made_once_private_and_reused(tmp_path):
    secret = load_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert len(secret) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path / "data") == secret
    path.chmod(0o644)
    assert load_secret(tmp_path / "data") == secret and path.stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path / "other", given="g" * 32) == b"g" * 32
    assert not (tmp_path / "other" / SECRET_FILE).exists()


def test_a_short_button_secret_setting_is_refused(tmp_path):
    from bot.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="BUTTON_SECRET"):
        Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": "1:x", "BUTTON_SECRET": "short"}, env_file=None)
    settings = Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": "1:x", "BUTTON_SECRET": "b" * 40}, env_file=None)
    assert settings.button_secret == "b" * 40 and "b" * 40 not in repr(settings)
