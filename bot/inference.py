"""What the handlers need of an inference service, whichever runs it: the in-process scheduler
(:class:`bot.scheduler.InferenceScheduler`) or a Ray Serve cluster (:class:`bot.cluster_client.ClusterInference`).

Both offer ``reserve(chat, model) -> reservation`` (``with``; ``await reservation.classify(bytes)``),
``classify``, ``explain(chat, bytes, levels, model)`` (an async iterator of :class:`Explanation`, coarse to
fine), ``queue_length()``, ``models``/``classifier``, ``start``/``ready``/``stop``; and raise :class:`Busy`
and :class:`Stopping`. This module needs no torch, so a gateway bot imports it without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass

MAIN, CANARY = "main", "canary"


class Busy(Exception):
    """Too much work is queued (overall, for this chat, or heat maps); try again later."""


class Stopping(Busy):
    """The service is stopping: the request is not done, and the journal keeps it for the next start."""


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
    from model.render import render_overlay

    from . import messages

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
