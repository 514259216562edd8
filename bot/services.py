"""The long-lived objects the handlers share, kept in ``application.bot_data["services"]``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from telegram import Update
from telegram.ext import ContextTypes

from .albums import Albums
from .budget import BytesInFlight
from .canary import serves_canary
from .config import Settings
from .feedback_store import FeedbackStore
from .i18n import ENGLISH, Language, Languages
from .inference import CANARY, MAIN
from .journal import Journal
from .stats import BotStats
from .store import PhotoStore

if TYPE_CHECKING:
    from model import Classifier

    from .cluster_client import ClusterInference
    from .scheduler import InferenceScheduler

SERVICES_KEY = "services"


@dataclass
class BotServices:
    settings: Settings
    inference: InferenceScheduler | ClusterInference  # in process, or a cluster (INFERENCE_ADDRESS)
    store: PhotoStore
    journal: Journal
    stats: BotStats
    languages: Languages  # the shipped catalogs (bot.i18n)
    albums: Albums  # the albums being collected for their one reply (bot.albums)
    bytes_in_flight: BytesInFlight  # downloaded, not yet decoded (MAX_BYTES_IN_FLIGHT, bot.budget)
    feedback: FeedbackStore | None = None  # None: feedback is off (FEEDBACK_DIR unset)

    @property
    def classifier(self) -> Classifier:
        """The main model (CHECKPOINT_PATH), as the scheduler serves it now (a reload swaps it there)."""
        return self.inference.classifier

    @property
    def canary(self) -> Classifier | None:
        """The candidate model for CANARY_SHARE of chats (CANARY_CHECKPOINT), if one is served."""
        return self.inference.models.get(CANARY)

    def model_for(self, chat_id: int | None) -> str:
        """The scheduler's name of the model that serves this chat: the canary for its share of chats."""
        if self.canary is None or chat_id is None:
            return MAIN
        return CANARY if serves_canary(chat_id, self.canary.checkpoint_id, self.settings.canary_share) else MAIN

    def classifier_for(self, chat_id: int | None) -> Classifier:
        return self.canary if self.model_for(chat_id) == CANARY else self.classifier

    @property
    def why_levels(self) -> list[tuple[int, int]]:
        """Coarse first (sent at once), then fine (edited in); one level when both are the same."""
        coarse = (self.settings.why_coarse_patch, self.settings.why_coarse_stride)
        fine = (self.settings.why_patch, self.settings.why_stride)
        return [fine] if coarse == fine else [coarse, fine]


def services(context: ContextTypes.DEFAULT_TYPE) -> BotServices:
    return context.application.bot_data[SERVICES_KEY]


def language_of(update: object, context: ContextTypes.DEFAULT_TYPE) -> Language:
    """The language to answer this update's user in (their Telegram ``language_code``; English otherwise)."""
    svc = context.application.bot_data.get(SERVICES_KEY)
    if svc is None:  # an error before the services started
        return ENGLISH
    return svc.languages.for_user(update.effective_user if isinstance(update, Update) else None)
