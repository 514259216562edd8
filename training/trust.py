"""Which feedback labels training may believe: a user's label is a claim, not the truth.

The rule (:class:`TrustRule`), applied to the latest judgement of each user on each photo (records carry the
user as a salted hash; older records without one count their chat as the user):

- **An admin's review wins.** ``python -m training.feedback review`` stores an admin's label for a photo
  (``INBOX/reviews.json``); it is used whatever the users said, and is not capped.
- **Agreement with the model counts from one chat.** A "Right" (the user's label is the predicted class) adds
  no new claim against the model; one chat is enough.
- **A correction needs company.** A label that contradicts the model counts only when at least ``min_users``
  distinct users in at least ``min_chats`` distinct chats gave it, and no other label got as many users.
- **No one may dominate.** Each admitted photo counts against every user who gave its label; a user's photos
  beyond ``max_chat_share`` of all admitted photos (but at least ``cap_floor``) are left out, oldest kept.

So one chat that taps "Wrong → shirt" on a hundred sarees changes nothing (each correction stands alone), one
that taps "Right" on every answer adds at most its share, and one person with a private chat and a few groups
they made is still one user: more chats do not make them more voters, nor raise their cap. :func:`suspicious_chats` lists chats whose labels
mostly disagree both with the model and with every other user, for an admin to look at.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.inbox import NONE_OF_THESE, FeedbackRecord, atomic_write
from model.inbox_exports import REVIEWS_FILE
from model.live_accuracy import latest_judgements

# Why a photo is left out (TrustedLabels.left_out); the first two are what an admin's review can settle.
DISAGREE, LONE_CORRECTION, NONE_CHOSEN, CAPPED = "users disagree", "a lone correction", "none of these", "over the cap"
REVIEWABLE = (DISAGREE, LONE_CORRECTION)


@dataclass(frozen=True)
class LeftOut:
    reason: str  # one of the constants above
    detail: str = ""


@dataclass(frozen=True)
class TrustRule:
    min_chats: int = 2  # distinct chats that must agree on a correction...
    max_chat_share: float = 0.1  # of the admitted photos, at most this share may rest on one user...
    cap_floor: int = 5  # ...but a user may always have this many (a young bot has few users)
    min_users: int = 2  # ...and distinct users (one person's groups are still one person)


@dataclass
class TrustedLabels:
    labels: dict[str, str] = field(default_factory=dict)  # photo id -> the label training may use
    left_out: dict[str, LeftOut] = field(default_factory=dict)  # photo id -> why not
    per_chat: Counter = field(default_factory=Counter)  # admitted photos resting on each chat
    per_user: Counter = field(default_factory=Counter)  # admitted photos resting on each user (see voter_of)


def voter_of(record: FeedbackRecord) -> str:
    """Who stands behind a judgement: its user, or its chat for a record made before users were kept."""
    return f"user:{record.user}" if record.user else f"chat:{record.chat}"


def latest_per_user(records: Sequence[FeedbackRecord]) -> list[FeedbackRecord]:
    """One judgement per (photo, user): the latest, whichever of their chats it came from."""
    latest: dict[tuple[str, str], FeedbackRecord] = {}
    for record in sorted(records, key=lambda r: r.time):
        latest[(record.photo_id, voter_of(record))] = record
    return list(latest.values())


def read_reviews(inbox_root: str | Path) -> dict[str, str]:
    path = Path(inbox_root) / REVIEWS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {str(photo): str(label) for photo, label in data.get("labels", {}).items()}


def write_review(inbox_root: str | Path, photo_id: str, label: str) -> None:
    """Record an admin's label for ``photo_id`` (atomically; a later review of the same photo replaces it)."""
    reviews = read_reviews(inbox_root)
    reviews[photo_id] = label
    data = json.dumps({"labels": dict(sorted(reviews.items()))}, indent=1) + "\n"
    atomic_write(Path(inbox_root) / REVIEWS_FILE, data.encode())


def trusted_labels(records: Sequence[FeedbackRecord], reviews: dict[str, str],
                   rule: TrustRule = TrustRule()) -> TrustedLabels:
    result = TrustedLabels()
    votes: dict[str, Counter] = defaultdict(Counter)  # photo -> label -> distinct users
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    chats: dict[tuple[str, str], set[str]] = defaultdict(set)
    predicted: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    for record in latest_per_user(records):
        votes[record.photo_id][record.label] += 1
        users[(record.photo_id, record.label)].add(voter_of(record))
        chats[(record.photo_id, record.label)].add(record.chat)
        predicted.setdefault(record.photo_id, record.predicted)
        first_seen[record.photo_id] = min(first_seen.get(record.photo_id, record.time), record.time)
    candidates: list[tuple[str, str, set[str], set[str]]] = []
    for photo_id in sorted(votes, key=lambda p: (first_seen[p], p)):
        if photo_id in reviews:
            result.labels[photo_id] = reviews[photo_id]
            continue
        (label, count), *rest = votes[photo_id].most_common()
        backers, rooms = users[(photo_id, label)], chats[(photo_id, label)]
        if rest and rest[0][1] == count:
            result.left_out[photo_id] = LeftOut(DISAGREE, str(dict(votes[photo_id])))
        elif label == NONE_OF_THESE:
            result.left_out[photo_id] = LeftOut(NONE_CHOSEN)
        elif label != predicted[photo_id] and (len(backers) < rule.min_users or len(rooms) < rule.min_chats):
            result.left_out[photo_id] = LeftOut(
                LONE_CORRECTION, f"from {len(backers)} user(s) in {len(rooms)} chat(s); needs {rule.min_users} users "
                                 f"in {rule.min_chats} chats, or a review")
        else:
            candidates.append((photo_id, label, backers, rooms))
    # The cap is a share of what is finally admitted, which shrinks as the cap does: lower it until it holds.
    cap = max(rule.cap_floor, math.floor(rule.max_chat_share * len(candidates)))
    while True:
        admitted, per_user, per_chat, capped = _admit(candidates, cap)
        fitting = max(rule.cap_floor, math.floor(rule.max_chat_share * (len(admitted) + len(result.labels))))
        if fitting >= cap:
            break
        cap = fitting
    result.labels.update(admitted)
    result.per_user, result.per_chat = per_user, per_chat
    for photo_id in capped:
        result.left_out[photo_id] = LeftOut(CAPPED, f"its users already have {cap} photo(s) each in training")
    return result


def _admit(candidates: list[tuple[str, str, set[str], set[str]]],
           cap: int) -> tuple[dict[str, str], Counter, Counter, list[str]]:
    """Oldest first, each photo unless every user behind it already has ``cap`` admitted photos."""
    admitted, per_user, per_chat, capped = {}, Counter(), Counter(), []
    for photo_id, label, backers, rooms in candidates:
        if all(per_user[user] >= cap for user in backers):
            capped.append(photo_id)
            continue
        admitted[photo_id] = label
        per_user.update(backers)
        per_chat.update(rooms)
    return admitted, per_user, per_chat, capped


@dataclass(frozen=True)
class SuspiciousChat:
    chat: str
    judged: int
    against_everyone: int  # labels that contradict the model and that no other chat gave for that photo


def suspicious_chats(records: Sequence[FeedbackRecord], min_judged: int = 5,
                     share: float = 0.5) -> list[SuspiciousChat]:
    """Chats with at least ``min_judged`` judgements of which more than ``share`` disagree with the model and
    with every other user who judged the same photo, most suspicious first."""
    judgements = latest_judgements(records)
    labels_by_photo: dict[str, dict[str, str]] = defaultdict(dict)
    for record in judgements:
        labels_by_photo[record.photo_id][record.chat] = record.label
    judged, against = Counter(), Counter()
    for record in judgements:
        judged[record.chat] += 1
        others = {label for chat, label in labels_by_photo[record.photo_id].items() if chat != record.chat}
        if record.label != record.predicted and record.label not in others:
            against[record.chat] += 1
    found = [SuspiciousChat(chat, n, against[chat]) for chat, n in judged.items()
             if n >= min_judged and against[chat] > share * n]
    return sorted(found, key=lambda s: (-s.against_everyone / s.judged, -s.judged))
