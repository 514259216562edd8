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
from typing import TYPE_CHECKING

from telegram.ext import Application

from model import CheckpointError

from .inference import CANARY, MAIN
from .services import SERVICES_KEY

if TYPE_CHECKING:
    from model import Classifier

log = logging.getLogger(__name__)

RELOAD_LOCK_KEY = "reload_lock"  # application.bot_data: one reload at a time


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    text: str  # one line, for the log and for the admin who asked


def load_and_probe(path) -> Classifier:
    """The checkpoint at ``path`` as a classifier that has answered one probe image; raises CheckpointError."""
    import torch  # here: a gateway bot (INFERENCE_ADDRESS) never loads a model, nor torch

    from model import load_classifier

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
    """Load, check and prepare CHECKPOINT_PATH (and CANARY_CHECKPOINT, when set), then serve them; one reload
    at a time. Refused as a whole when either file is bad."""
    svc = application.bot_data[SERVICES_KEY]
    if svc.settings.inference_address:
        result = ReloadResult(False, f"reload ({reason}) refused: the cluster at INFERENCE_ADDRESS serves the model; "
                                     "start python -m model serve with the new checkpoint instead")
        log.error(result.text)
        return result
    async with application.bot_data.setdefault(RELOAD_LOCK_KEY, asyncio.Lock()):
        results = [await _reload_one(svc, svc.settings.checkpoint_path, MAIN, reason)]
        if svc.settings.canary_checkpoint is not None and results[0].ok:
            results.append(await _reload_one(svc, svc.settings.canary_checkpoint, CANARY, reason))
        return ReloadResult(all(r.ok for r in results), "; ".join(r.text for r in results))


async def _reload_one(svc, path, model: str, reason: str) -> ReloadResult:
    started = time.monotonic()
    old = svc.inference.models.get(model)
    what = "" if model == MAIN else f"{model} "
    try:
        classifier = await asyncio.to_thread(load_and_probe, path)
    except CheckpointError as error:
        result = ReloadResult(False, f"reload ({reason}) refused: {path}: {error}; still serving {what}checkpoint "
                                     f"{old.checkpoint_id[:12] if old else '(none)'}")
        log.error(result.text)
        return result
    if old is not None and classifier.checkpoint_id == old.checkpoint_id:
        result = ReloadResult(True, f"reload ({reason}): {path} is the {what}checkpoint already served "
                                    f"({old.checkpoint_id[:12]})")
        log.info(result.text)
        return result
    preparation = await asyncio.to_thread(svc.inference.prepare_replacement, classifier)
    svc.inference.swap(classifier, preparation, model)
    result = ReloadResult(True, f"reload ({reason}): now serving {what}checkpoint {classifier.checkpoint_id[:12]} "
                                f"(classes {', '.join(classifier.class_names)}; was "
                                f"{old.checkpoint_id[:12] if old else '(none)'}) after {time.monotonic() - started:.1f} s; "
                                f"forward pass {preparation.describe()}")
    log.info(result.text)
    return result
