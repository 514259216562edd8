"""Which chats try the candidate model: a stable, salted hash of the chat id against CANARY_SHARE.

The salt is the candidate checkpoint's sha256, so a chat keeps its model for as long as that candidate is
served (restarts included), and a new candidate draws a fresh sample of chats.
"""
from __future__ import annotations

import hashlib


def chat_fraction(chat_id: int, salt: str) -> float:
    """A number in [0, 1) fixed for (chat, salt) and spread evenly over chats."""
    digest = hashlib.sha256(f"{salt}:{chat_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def serves_canary(chat_id: int, salt: str, share: float) -> bool:
    return chat_fraction(chat_id, salt) < share
