"""A bounded, thread-safe LRU of occlusion results, so a second /why of the same photo answers at once.

Keyed by (checkpoint id, sha256 of the image content, patch, stride): a new checkpoint or other settings
never return a stale map. The cache itself is the one LRU type (:class:`model.serving.lru.LRUCache`).
"""
from __future__ import annotations

from .occlusion_result import OcclusionResult
from .serving.lru import LRUCache

CacheKey = tuple[str, str, int, int]


class ExplanationCache(LRUCache[CacheKey, OcclusionResult]):
    def __init__(self, max_entries: int = 128):
        super().__init__(max_entries)

    def get(self, checkpoint_id: str, image_sha256: str, patch: int, stride: int) -> OcclusionResult | None:  # type: ignore[override]
        return super().get((checkpoint_id, image_sha256, int(patch), int(stride)))

    def put(self, checkpoint_id: str, image_sha256: str, patch: int, stride: int,  # type: ignore[override]
            result: OcclusionResult) -> None:
        super().put((checkpoint_id, image_sha256, int(patch), int(stride)), result)

    def forget(self, digests: set[str]) -> int:
        """Drop the maps of these photos (/forget)."""
        return self.drop_where(lambda key: key[1] in digests)
