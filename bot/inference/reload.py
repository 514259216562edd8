"""A new model without a restart: SIGHUP (``systemctl reload``) or /reload from an admin; one reload at a time.

The backend does it (:meth:`bot.inference.contract.InferenceBackend.reload`), in process or on the cluster, by the same
rules: the file is loaded the safe way (its verified OpenVINO export, without torch, where valid; else
``weights_only`` with torch, :mod:`bot.inference.checkpoints`), prepared while the old model keeps serving, and
checked with a probe forward pass; only then is it swapped in. Work already running finishes on the model it
started with. A missing, truncated or foreign file, or one whose probe fails, is refused: the old model keeps
serving and the operator gets an error line.
"""
from __future__ import annotations

import asyncio

from telegram.ext import Application

from bot.inference.contract import ReloadResult
from bot.services import SERVICES_KEY

__all__ = ["RELOAD_LOCK_KEY", "ReloadResult", "reload_model"]

RELOAD_LOCK_KEY = "reload_lock"  # application.bot_data: one reload at a time


async def reload_model(application: Application, reason: str) -> ReloadResult:
    """Load, check and prepare CHECKPOINT_PATH (and CANARY_CHECKPOINT, when set), then serve them; one reload
    at a time. Refused as a whole when either file is bad."""
    svc = application.bot_data[SERVICES_KEY]
    async with application.bot_data.setdefault(RELOAD_LOCK_KEY, asyncio.Lock()):
        return await svc.inference.reload(reason)
