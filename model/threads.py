"""Torch CPU threading, set once and deliberately (a 2-core server must not run 2 pools of 2 threads each)."""
from __future__ import annotations

import os

import torch


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_torch_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: one per available core) and one inter-op thread."""
    count = threads if threads and threads > 0 else available_cores()
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # may only be set once, before any parallel work; later calls are harmless to skip
        pass
    return count
