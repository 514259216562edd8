"""Every inline button's ``callback_data``, one codec per prefix, and the keys that bind a button to its chat.

A button carries a short key for the photo behind it (``file_id`` is often longer than Telegram's 64
bytes, so :mod:`bot.state.store` keeps it under the key). The key is an HMAC over (chat id, the photo's
``file_unique_id``) under a per-deployment secret (:func:`load_secret`): only this bot can make one, and a
key names the chat it was made for. A press is served only when the key is the one for the chat the press
came from and a photo the store holds for that chat (:meth:`ButtonKeys.matches`), so button data copied into
another chat (or computed from a file the attacker also holds) finds nothing.

The formats, each checked whole with ASCII-only patterns (``str.isdigit`` accepts "²", which ``int`` refuses)::

    why:<key>            the "Why?" heat map (bot.handlers.why)
    wn:<key>:<i>         "Why not <class i>?" (bot.handlers.why)
    fb:<key>:ok|no|x|d   feedback: right, wrong (show the classes), none of these, the "Thanks" button
    fb:<key>:<i>         feedback: the user's class, by index (bot.handlers.feedback)

Anything else decodes to ``None``: old buttons (before keys named the chat) and forged data alike.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from model.inbox import atomic_write

log = logging.getLogger(__name__)

CALLBACK_DATA_LIMIT = 64  # bytes, Telegram's limit on callback_data
KEY_CHARS = 24  # hex characters of the HMAC kept in a button: 96 bits, far beyond guessing
SECRET_FILE = "button_secret"  # in DATA_DIR, mode 0600, made once when BUTTON_SECRET is not set
WHY, WHY_NOT, FEEDBACK = "why", "wn", "fb"
RIGHT, WRONG, NONE_CHOICE, DONE = "ok", "no", "x", "d"
MAX_CLASS_INDEX_DIGITS = 3

_KEY = rf"[0-9a-f]{{{KEY_CHARS}}}"
_INDEX = rf"(?:0|[1-9][0-9]{{0,{MAX_CLASS_INDEX_DIGITS - 1}}})"
_CLASS_INDEX = re.compile(_INDEX, re.ASCII)
_WHY = re.compile(rf"why:({_KEY})", re.ASCII)
_WHY_NOT = re.compile(rf"wn:({_KEY}):({_INDEX})", re.ASCII)
_FEEDBACK = re.compile(rf"fb:({_KEY}):({RIGHT}|{WRONG}|{NONE_CHOICE}|{DONE}|{_INDEX})", re.ASCII)


def _checked(data: str, pattern: re.Pattern) -> str:
    """``data`` if its own codec reads it back and it fits Telegram's limit (a bug, never a user's doing, if not)."""
    if len(data.encode()) > CALLBACK_DATA_LIMIT:
        raise ValueError(f"callback_data over {CALLBACK_DATA_LIMIT} bytes: {data!r}")
    if pattern.fullmatch(data) is None:
        raise ValueError(f"malformed callback_data: {data!r}")
    return data


def _match(pattern: re.Pattern, data: object) -> re.Match | None:
    return pattern.fullmatch(data) if isinstance(data, str) else None


@dataclass(frozen=True)
class WhyData:
    """The "Why?" button of one photo."""

    key: str

    def encode(self) -> str:
        return _checked(f"{WHY}:{self.key}", _WHY)

    @classmethod
    def decode(cls, data: object) -> WhyData | None:
        match = _match(_WHY, data)
        return cls(match[1]) if match else None


@dataclass(frozen=True)
class WhyNotData:
    """A "Why not <class>?" button: the photo and the class's index in the model's class names."""

    key: str
    class_index: int

    def encode(self) -> str:
        return _checked(f"{WHY_NOT}:{self.key}:{self.class_index}", _WHY_NOT)

    @classmethod
    def decode(cls, data: object) -> WhyNotData | None:
        match = _match(_WHY_NOT, data)
        return cls(match[1], int(match[2])) if match else None


@dataclass(frozen=True)
class FeedbackData:
    """A feedback button: the photo and the choice (RIGHT, WRONG, NONE_CHOICE, DONE, or a class index as text)."""

    key: str
    choice: str

    @property
    def class_index(self) -> int | None:
        return int(self.choice) if _CLASS_INDEX.fullmatch(self.choice) else None

    def encode(self) -> str:
        return _checked(f"{FEEDBACK}:{self.key}:{self.choice}", _FEEDBACK)

    @classmethod
    def decode(cls, data: object) -> FeedbackData | None:
        match = _match(_FEEDBACK, data)
        return cls(match[1], match[2]) if match else None


def key_of_button(data: object) -> str | None:
    """The photo key of any of the bot's buttons, or ``None`` for data that is none of them."""
    decoded = WhyData.decode(data) or WhyNotData.decode(data) or FeedbackData.decode(data)
    return decoded.key if decoded is not None else None


class ButtonKeys:
    """Makes and checks button keys under the deployment's secret (never logged, never in a repr)."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the button secret must be at least 16 bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "ButtonKeys(<secret>)"

    def key(self, chat_id: int, file_unique_id: str) -> str:
        message = f"{int(chat_id)}\x00{file_unique_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:KEY_CHARS]

    def matches(self, key: str, chat_id: int, file_unique_id: str) -> bool:
        """Whether ``key`` is the one this bot made for this photo in this chat (constant time)."""
        return hmac.compare_digest(key.encode(), self.key(chat_id, file_unique_id).encode())


def load_secret(data_dir: Path, given: str = "") -> bytes:
    """BUTTON_SECRET when set, else the secret kept in ``DATA_DIR/button_secret`` (made once, mode 0600)."""
    if given:
        return given.encode()
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        atomic_write(path, secrets.token_hex(32).encode(), exclusive=True, mode=0o600)
        log.info("buttons: made a new button secret in %s (buttons sent before it no longer work)", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)  # tightened, not refused: the file is the bot's own
    return path.read_bytes().strip()
