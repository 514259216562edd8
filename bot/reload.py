"""A new model without a restart: SIGHUP (``systemctl reload``) or /reload from an admin loads CHECKPOINT_PATH
again and swaps it in.

The file is loaded the safe way (``weights_only``), checked with a probe forward pass, and prepared (forward
pass chosen, first passes run) in a thread while the old model keeps serving; only then does the scheduler
swap it in (:meth:`bot.scheduler.InferenceScheduler.swap`). Work already running finishes on the model it
started with. A missing, truncated or foreign file, or one whose probe fails, is refused: the old model keeps
serving and the operator gets an error line.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import torch
from telegram.ext import Application

from model import CheckpointError, Classifier, load_classifier

from .services import SERVICES_KEY

log = logging.getLogger(__name__)

RELOAD_LOCK_KEY = "reload_lock"  # application.bot_data: one reload at a time


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    text: str  # one line, for the log and for the admin who asked


def load_and_probe(path) -> Classifier:
    """The checkpoint at ``path`` as a classifier that has answered one probe image; raises CheckpointError."""
    classifier = load_classifier(path)
    side = classifier.preprocess_config.crop
    try:
        probabilities = classifier.probabilities(torch.zeros(1, 3, side, side))
    except Exception as error:  # a checkpoint that loads but cannot run
        raise CheckpointError(f"the probe forward pass failed: {error}") from None
    if tuple(probabilities.shape) != (1, len(classifier.class_names)) or not all(
            math.isfinite(float(p)) for p in probabilities[0]):
        raise CheckpointError("the probe forward pass gave no valid probabilities")
    return classifier


async def reload_model(application: Application, reason: str) -> ReloadResult:
    """Load, check and prepare CHECKPOINT_PATH, then serve it; one reload at a time."""
    svc = application.bot_data[SERVICES_KEY]
    path = svc.settings.checkpoint_path
    async with application.bot_data.setdefault(RELOAD_LOCK_KEY, asyncio.Lock()):
        started = time.monotonic()
        old = svc.classifier
        try:
            classifier = await asyncio.to_thread(load_and_probe, path)
        except CheckpointError as error:
            result = ReloadResult(False, f"reload ({reason}) refused: {path}: {error}; still serving checkpoint "
                                         f"{old.checkpoint_id[:12]}")
            log.error(result.text)
            return result
        if classifier.checkpoint_id == old.checkpoint_id:
            result = ReloadResult(True, f"reload ({reason}): {path} is the checkpoint already served "
                                        f"({old.checkpoint_id[:12]})")
            log.info(result.text)
            return result
        preparation = await asyncio.to_thread(svc.inference.prepare_replacement, classifier)
        svc.inference.swap(classifier, preparation)
        svc.classifier = classifier
        result = ReloadResult(True, f"reload ({reason}): now serving checkpoint {classifier.checkpoint_id[:12]} "
                                    f"(classes {', '.join(classifier.class_names)}; was {old.checkpoint_id[:12]}) "
                                    f"after {time.monotonic() - started:.1f} s; forward pass {preparation.describe()}")
        log.info(result.text)
        return result
