"""A bounded, thread-safe LRU of occlusion results, so a second /why of the same photo answers at once.

Keyed by (checkpoint id, sha256 of the image content, patch, stride): a new checkpoint or other settings
never return a stale map.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from .occlusion import OcclusionResult

CacheKey = tuple[str, str, int, int]


class ExplanationCache:
    def __init__(self, max_entries: int = 128):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, OcclusionResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, checkpoint_id: str, image_sha256: str, patch: int, stride: int) -> OcclusionResult | None:
        key = (checkpoint_id, image_sha256, int(patch), int(stride))
        with self._lock:
            result = self._entries.get(key)
            if result is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)  # most recently used last; eviction takes the first
            self.hits += 1
            return result

    def put(self, checkpoint_id: str, image_sha256: str, patch: int, stride: int, result: OcclusionResult) -> None:
        key = (checkpoint_id, image_sha256, int(patch), int(stride))
        with self._lock:
            self._entries[key] = result
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
