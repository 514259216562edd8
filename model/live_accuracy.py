"""Live accuracy: how the bot's answers fared with the users who judged them (from inbox records).

Shared by the bot's /stats and ``python -m training.feedback report`` so both count the same way.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .inbox import NONE_OF_THESE, FeedbackRecord


def latest_judgements(records: Iterable[FeedbackRecord]) -> list[FeedbackRecord]:
    """One judgement per (photo, chat): the latest, so a user who changes their mind counts once."""
    latest: dict[tuple[str, str], FeedbackRecord] = {}
    for record in sorted(records, key=lambda r: r.time):
        latest[(record.photo_id, record.chat)] = record
    return list(latest.values())


@dataclass(frozen=True)
class LiveAccuracy:
    """How the bot's answers fared with users: counts of (user's label, predicted class) pairs."""

    pairs: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, records: Iterable[FeedbackRecord]) -> LiveAccuracy:
        return cls(Counter((r.label, r.predicted) for r in latest_judgements(records)))

    @property
    def judged(self) -> int:
        return sum(self.pairs.values())

    @property
    def right(self) -> int:
        return sum(n for (label, predicted), n in self.pairs.items() if label == predicted)

    @property
    def none_of_these(self) -> int:
        return sum(n for (label, _), n in self.pairs.items() if label == NONE_OF_THESE)

    @property
    def accuracy(self) -> float | None:
        return self.right / self.judged if self.judged else None

    def per_class(self, class_names: Iterable[str]) -> dict[str, dict]:
        """Per class: answers judged and right (precision as users saw it), photos users labelled with it
        and found (recall)."""
        scores = {}
        for name in class_names:
            answered = sum(n for (_, predicted), n in self.pairs.items() if predicted == name)
            labelled = sum(n for (label, _), n in self.pairs.items() if label == name)
            right = self.pairs.get((name, name), 0)
            scores[name] = {
                "answered": answered,
                "right": right,
                "precision": right / answered if answered else None,
                "labelled": labelled,
                "recall": right / labelled if labelled else None,
            }
        return scores


Z_95 = 1.96  # two-sided 95% normal quantile


def wilson_interval(right: int, judged: int, z: float = Z_95) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion: honest at small counts (never outside 0..1)."""
    if judged <= 0:
        return None
    p = right / judged
    centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
    half = z * ((p * (1 - p) / judged + z * z / (4 * judged * judged)) ** 0.5) / (1 + z * z / judged)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class CheckpointScore:
    """Live accuracy of one checkpoint's answers, as users judged them."""

    checkpoint_id: str
    judged: int
    right: int

    @property
    def accuracy(self) -> float | None:
        return self.right / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.right, self.judged)


def per_checkpoint(records: Iterable[FeedbackRecord]) -> list[CheckpointScore]:
    """One score per checkpoint that gave judged answers, most judged first ("None of these" counts as wrong)."""
    judged, right = Counter(), Counter()
    for record in latest_judgements(records):
        judged[record.checkpoint_id] += 1
        right[record.checkpoint_id] += record.right
    return [CheckpointScore(c, n, right[c]) for c, n in judged.most_common()]


def accuracy_difference(a: CheckpointScore, b: CheckpointScore, z: float = Z_95) -> tuple[float, float, float] | None:
    """``a``'s accuracy minus ``b``'s with its 95% interval (normal approximation; conclusive when the
    interval excludes 0)."""
    if not a.judged or not b.judged:
        return None
    pa, pb = a.right / a.judged, b.right / b.judged
    half = z * (pa * (1 - pa) / a.judged + pb * (1 - pb) / b.judged) ** 0.5
    return pa - pb, pa - pb - half, pa - pb + half
