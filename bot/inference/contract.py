"""The inference contract: what the handlers need of an inference backend, whichever runs it — the in-process
scheduler (:class:`bot.inference.local.InferenceScheduler`) or a Ray Serve cluster (:class:`bot.inference.cluster.ClusterInference`).
The composition root (:func:`bot.app.start_services`) picks one; nothing else asks which.

:class:`InferenceBackend` (a Protocol) is the contract, and tests/bot/test_inference_contract.py runs the same cases
against both. Both raise :class:`Busy` (and :class:`Stopping`, a Busy) from :mod:`model.serving.admission`, the one
admission shared with the replicas. This module needs no torch, so a gateway bot imports it without loading a model.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from model.prediction import Prediction
from model.preprocess import PreprocessConfig
from model.serving.admission import Busy, Stopping

__all__ = ["CANARY", "MAIN", "Busy", "ClassifyReservation", "Explanation", "InferenceBackend", "MapReservation",
           "ModelView", "ReloadResult", "Stopping", "WHY_NOT_CLASSES", "explanation_of", "render_explanation"]

MAIN, CANARY = "main", "canary"


class ModelView(Protocol):
    """What the handlers read of a served model."""

    class_names: list[str]
    checkpoint_id: str
    preprocess_config: PreprocessConfig


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    text: str  # one line, for the log and for the admin who asked


class ClassifyReservation(Protocol):
    """A photo's admitted place: ``with backend.reserve(chat, model) as r: ... await r.classify(data)``."""

    def __enter__(self) -> ClassifyReservation: ...

    def __exit__(self, *exc_info) -> None: ...

    async def classify(self, data: bytes) -> Prediction: ...


class MapReservation(Protocol):
    """A /why's admitted place, taken before its photo is downloaded: ``with backend.reserve_explain(chat) as r:
    ... async for explanation in r.explain(data, levels, model, target, language)`` (coarse to fine)."""

    def __enter__(self) -> MapReservation: ...

    def __exit__(self, *exc_info) -> None: ...

    def explain(self, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN, target: int | None = None,
                language=None) -> AsyncIterator[Explanation]: ...


class InferenceBackend(Protocol):
    """Classify, explain (levels streamed coarse to fine), admission first, reload, canary routing, /stats, /forget,
    start/ready/stop. Admission refuses at once (:class:`Busy`): QUEUE_SIZE, PER_CHAT_QUEUE, WHY_QUEUE_SIZE and a
    chat's fair share of it."""

    models: dict[str, ModelView]  # "main", and "canary" while a candidate serves a share of chats

    @property
    def classifier(self) -> ModelView:
        """The main model, as served now."""
        ...

    def model_for(self, chat_id: int | None) -> str:
        """The name of the model that serves this chat: the canary for its CANARY_SHARE of chats (bot.inference.canary)."""
        ...

    def reserve(self, chat_id: Hashable, model: str = MAIN) -> ClassifyReservation: ...

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction: ...

    def reserve_explain(self, chat_id: Hashable) -> MapReservation: ...

    def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN,
                target: int | None = None, language=None) -> AsyncIterator[Explanation]: ...

    async def reload(self, reason: str) -> ReloadResult:
        """Load, check and prepare the checkpoint(s) again and serve them; a bad file is refused, the old model
        keeps serving, and work in flight finishes on the model it started with."""
        ...

    def queue_length(self) -> int: ...

    def queue_depths(self) -> dict[str, int]:
        """Work waiting here, per queue (``requests``: admitted and unanswered; ``maps``: heat maps among them;
        ``batch``: photos decoded and waiting for a batch, in process only): the metrics' gauges."""
        ...

    def maps_cached(self) -> int:
        """Heat maps kept here (grids and drawn maps) for an instant repeat or a "Why not …?"."""
        ...

    def stats_lines(self) -> dict[str, object]:
        """What /stats shows of this backend (its own lines only)."""
        ...

    def forget(self, chat_id: Hashable) -> None:
        """Drop what the in-memory caches keep of this chat's photos (/forget)."""
        ...

    def start(self) -> None: ...

    async def ready(self) -> None: ...

    async def stop(self, timeout: float = 5.0) -> None: ...


WHY_NOT_CLASSES = 3  # "Why not …?" buttons for the other classes among the top 3


@dataclass(frozen=True)
class Explanation:
    """One rendered heat map; ``final`` is the last (finest) one of a /why. ``label``/``confidence``: the class
    the map explains and its probability; ``predicted``: the model's answer; ``others``: the other likely classes
    (top 3, neither of those two), by index, for "Why not …?" buttons."""

    png: bytes
    label: str
    confidence: float
    patch: int
    stride: int
    final: bool
    cached: bool
    predicted: str = ""
    others: tuple[tuple[int, str], ...] = ()


def render_explanation(photo, result, target: int, lang, class_names: list[str], preprocess_config, patch: int,
                       stride: int) -> bytes:
    """The heat-map PNG of ``result`` (a :class:`model.occlusion_result.OcclusionResult`) for class ``target``, with
    its texts in ``lang`` (a :class:`bot.i18n.Language`); no inference. CPU-bound: call it off the event loop."""
    from bot import messages
    from model.render import render_overlay

    chosen = result.for_target(target)
    label = class_names[target]
    return render_overlay(photo, chosen.occlusion_map, label, chosen.probability, preprocess_config=preprocess_config,
                          patch=patch, stride=stride, texts=messages.heat_map_texts(label, chosen.probability, lang))


def explanation_of(photo, result, target: int | None, lang, class_names: list[str], preprocess_config, patch: int,
                   stride: int, final: bool, cached: bool) -> Explanation:
    """``result`` drawn for ``target`` (default: the class it explains), with the "Why not …?" classes."""
    target = result.target if target is None else target
    if not 0 <= target < len(class_names):
        raise ValueError(f"class {target} is not one of this model's {len(class_names)}")
    png = render_explanation(photo, result, target, lang, class_names, preprocess_config, patch, stride)
    others = tuple((index, class_names[index]) for index in result.top_classes(WHY_NOT_CLASSES)
                   if index not in (target, result.target))
    return Explanation(png, class_names[target], result.for_target(target).probability, patch, stride, final=final,
                       cached=cached, predicted=class_names[result.target], others=others)
