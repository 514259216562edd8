"""Drawing a /why's maps in the user's language, the same for both inference backends: the photo decoded once
(off the event loop) when the first map arrives, each map drawn on it (:func:`bot.inference.contract.explanation_of`),
and two bounded caches (the one LRU type, :class:`model.serving.lru.LRUCache`):

- the final maps as drawn (PNG), by (checkpoint, photo, level, class, language): a repeat /why answers at once;
- the final maps' grids, by (checkpoint, photo, level): a "Why not …?" map for another class, or in another
  language, is drawn from them without inference.

:meth:`MapDrawing.forget` drops a chat's entries (/forget): the photos each chat asked about are noted here.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable
from dataclasses import replace
from typing import Protocol

from bot.i18n import ENGLISH
from bot.inference.contract import Explanation, explanation_of
from model.occlusion_result import OcclusionResult
from model.preprocess import PreprocessConfig, open_image
from model.serving.levels import LevelResult
from model.serving.lru import LRUCache

RENDERED_KEPT = 16  # final heat-map PNGs (about 0.2 MB each)
GRIDS_KEPT = 32  # final maps' grids (a few hundred kB each at 13 x 13 x classes)
CHATS_NOTED = 4096  # chats whose photos are noted for /forget


class ModelInfo(Protocol):
    """What drawing needs of the model that computed a map (an engine, or the cluster's served model)."""

    class_names: list[str]
    checkpoint_id: str
    preprocess_config: PreprocessConfig


class MapDrawing:
    def __init__(self) -> None:
        self.rendered: LRUCache[tuple, Explanation] = LRUCache(RENDERED_KEPT)
        self.grids: LRUCache[tuple, OcclusionResult] = LRUCache(GRIDS_KEPT)
        self._photos_of: LRUCache[Hashable, frozenset[str]] = LRUCache(CHATS_NOTED)
        self.drawn_from_grids = 0  # maps drawn again from a kept grid, without inference

    def start(self, chat_id: Hashable, data: bytes, model: ModelInfo, target: int | None, language) -> Drawing:
        digest = hashlib.sha256(data).hexdigest()
        self._photos_of.put(chat_id, (self._photos_of.get(chat_id) or frozenset()) | {digest})
        return Drawing(self, data, digest, model, target, language or ENGLISH)

    def forget(self, chat_id: Hashable) -> set[str]:
        """Drop what this chat's photos left here; returns their digests (for the backends' own caches)."""
        digests = set(self._photos_of.get(chat_id) or ())
        self._photos_of.drop_where(lambda chat: chat == chat_id)
        self.rendered.drop_where(lambda key: key[1] in digests)
        self.grids.drop_where(lambda key: key[1] in digests)
        return digests


class Drawing:
    """One /why's photo and what to draw it for (see the module docstring)."""

    def __init__(self, drawing: MapDrawing, data: bytes, digest: str, model: ModelInfo, target: int | None, lang):
        self._drawing, self.data, self.digest, self.model, self.target, self.lang = drawing, data, digest, model, target, lang
        self._image = None

    def _grid_key(self, patch: int, stride: int) -> tuple:
        return self.model.checkpoint_id, self.digest, int(patch), int(stride)

    def _drawn_key(self, patch: int, stride: int) -> tuple:
        return (*self._grid_key(patch, stride), self.target, self.lang.code)

    async def kept(self, level: tuple[int, int]) -> Explanation | None:
        """The final map of ``level`` as drawn before, or drawn from a kept grid; None when neither is kept."""
        drawn = self._drawing.rendered.get(self._drawn_key(*level))
        if drawn is not None:  # asked before: no decoding, no drawing
            return replace(drawn, cached=True)
        result = self._drawing.grids.get(self._grid_key(*level))
        if result is None:
            return None
        self._drawing.drawn_from_grids += 1
        return await self._draw(result, *level, final=True, cached=True)

    async def draw(self, level: LevelResult) -> Explanation:
        if level.final:
            self._drawing.grids.put(self._grid_key(level.patch, level.stride), level.result)
        return await self._draw(level.result, level.patch, level.stride, level.final, level.cached)

    async def _draw(self, result: OcclusionResult, patch: int, stride: int, final: bool, cached: bool) -> Explanation:
        config = self.model.preprocess_config
        if self._image is None:
            self._image = await asyncio.to_thread(open_image, self.data, draft_size=config.resize)
        explanation = await asyncio.to_thread(explanation_of, self._image, result, self.target, self.lang,
                                              self.model.class_names, config, patch, stride, final, cached)
        if final:
            self._drawing.rendered.put(self._drawn_key(patch, stride), explanation)
        return explanation
