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


@dataclass(frozen=True)
class Explanation:
    """One rendered heat map; ``final`` is the last (finest) one of a /why."""

    png: bytes
    label: str
    confidence: float
    patch: int
    stride: int
    final: bool
    cached: bool


def render_explanation(image, occlusion_map, label: str, probability: float, preprocess_config, patch: int,
                       stride: int, final: bool, cached: bool) -> Explanation:
    """Draw one map over its photo (CPU-bound: call it off the event loop)."""
    from model.render import render_overlay

    png = render_overlay(image, occlusion_map, label, probability, preprocess_config=preprocess_config, patch=patch,
                         stride=stride)
    return Explanation(png, label, probability, patch, stride, final=final, cached=cached)
