"""The long-lived objects the handlers share, kept in ``application.bot_data["services"]``."""
from __future__ import annotations

from dataclasses import dataclass

from telegram import Update
from telegram.ext import ContextTypes

from bot.config import Settings
from bot.handlers.albums import Albums
from bot.handlers.budget import BytesInFlight
from bot.i18n import ENGLISH, Language, Languages
from bot.inference.contract import CANARY, InferenceBackend, ModelView
from bot.ops.stats import BotStats
from bot.state.feedback_records import FeedbackStore
from bot.state.journal import Journal
from bot.state.store import PhotoStore

SERVICES_KEY = "services"


@dataclass
class BotServices:
    settings: Settings
    inference: InferenceBackend  # in process, or a cluster (INFERENCE_ADDRESS): bot.app picks it
    store: PhotoStore
    journal: Journal
    stats: BotStats
    languages: Languages  # the shipped catalogs (bot.i18n)
    albums: Albums  # the albums being collected for their one reply (bot.handlers.albums)
    bytes_in_flight: BytesInFlight  # downloaded, not yet decoded (MAX_BYTES_IN_FLIGHT, bot.handlers.budget)
    feedback: FeedbackStore | None = None  # None: feedback is off (FEEDBACK_DIR unset)

    @property
    def classifier(self) -> ModelView:
        """The main model (CHECKPOINT_PATH), as the backend serves it now (a reload swaps it there)."""
        return self.inference.classifier

    @property
    def canary(self) -> ModelView | None:
        """The candidate model for CANARY_SHARE of chats (CANARY_CHECKPOINT), if one is served."""
        return self.inference.models.get(CANARY)

    def model_for(self, chat_id: int | None) -> str:
        """The backend's name of the model that serves this chat (the backend routes the canary's share)."""
        return self.inference.model_for(chat_id)

    def classifier_for(self, chat_id: int | None) -> ModelView:
        return self.inference.models.get(self.model_for(chat_id)) or self.classifier

    @property
    def why_levels(self) -> list[tuple[int, int]]:
        return self.settings.why_levels


def services(context: ContextTypes.DEFAULT_TYPE) -> BotServices:
    return context.application.bot_data[SERVICES_KEY]


def language_of(update: object, context: ContextTypes.DEFAULT_TYPE) -> Language:
    """The language to answer this update's user in (their Telegram ``language_code``; English otherwise)."""
    svc = context.application.bot_data.get(SERVICES_KEY)
    if svc is None:  # an error before the services started
        return ENGLISH
    return svc.languages.for_user(update.effective_user if isinstance(update, Update) else None)
