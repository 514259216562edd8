"""The long-lived objects the handlers share, kept in ``application.bot_data["services"]``."""
from __future__ import annotations

from dataclasses import dataclass

from telegram.ext import ContextTypes

from model import Classifier

from .config import Settings
from .feedback_store import FeedbackStore
from .journal import Journal
from .scheduler import InferenceScheduler
from .stats import BotStats
from .store import PhotoStore

SERVICES_KEY = "services"


@dataclass
class BotServices:
    settings: Settings
    classifier: Classifier
    inference: InferenceScheduler
    store: PhotoStore
    journal: Journal
    stats: BotStats
    feedback: FeedbackStore | None = None  # None: feedback is off (FEEDBACK_DIR unset)

    @property
    def why_levels(self) -> list[tuple[int, int]]:
        """Coarse first (sent at once), then fine (edited in); one level when both are the same."""
        coarse = (self.settings.why_coarse_patch, self.settings.why_coarse_stride)
        fine = (self.settings.why_patch, self.settings.why_stride)
        return [fine] if coarse == fine else [coarse, fine]


def services(context: ContextTypes.DEFAULT_TYPE) -> BotServices:
    return context.application.bot_data[SERVICES_KEY]
