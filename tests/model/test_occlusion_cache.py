"""The explanation cache: hits, misses on any key part, LRU eviction, safe under threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from model.explain_cache import ExplanationCache
from model.occlusion import OcclusionResult


def _result(value: float) -> OcclusionResult:
    return OcclusionResult(occlusion_map=np.full((3, 3), value, dtype=np.float32), target=1, probability=0.5)


def test_hit_after_put_and_miss_on_any_other_key():
    cache = ExplanationCache(max_entries=4)
    assert cache.get("ckpt", "sha", 16, 8) is None
    stored = _result(0.25)
    cache.put("ckpt", "sha", 16, 8, stored)
    assert cache.get("ckpt", "sha", 16, 8) is stored
    for key in [("other", "sha", 16, 8), ("ckpt", "other", 16, 8), ("ckpt", "sha", 8, 8), ("ckpt", "sha", 16, 4)]:
        assert cache.get(*key) is None
    assert (cache.hits, cache.misses) == (1, 5)


def test_least_recently_used_entry_is_evicted():
    cache = ExplanationCache(max_entries=2)
    cache.put("c", "a", 16, 8, _result(1))
    cache.put("c", "b", 16, 8, _result(2))
    assert cache.get("c", "a", 16, 8) is not None  # "a" is now the most recently used
    cache.put("c", "c", 16, 8, _result(3))
    assert len(cache) == 2
    assert cache.get("c", "b", 16, 8) is None
    assert cache.get("c", "a", 16, 8).occlusion_map[0, 0] == 1
    assert cache.get("c", "c", 16, 8).occlusion_map[0, 0] == 3


def test_put_replaces_an_existing_entry():
    cache = ExplanationCache(max_entries=2)
    cache.put("c", "a", 16, 8, _result(1))
    cache.put("c", "a", 16, 8, _result(5))
    assert len(cache) == 1 and cache.get("c", "a", 16, 8).occlusion_map[0, 0] == 5


def test_bound_must_be_positive():
    with pytest.raises(ValueError):
        ExplanationCache(max_entries=0)


def test_concurrent_use_keeps_the_bound():
    cache = ExplanationCache(max_entries=8)
    errors = []

    def worker(seed: int) -> None:
        try:
            for i in range(200):
                cache.put("c", f"{seed}-{i % 20}", 16, 8, _result(i))
                cache.get("c", f"{seed}-{(i * 7) % 20}", 16, 8)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(cache) == 8
