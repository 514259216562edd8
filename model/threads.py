"""Torch CPU threading, set once and deliberately (a 2-core server must not run 2 pools of 2 threads each)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

_PR_SET_NAME = 15  # prctl(2): the calling thread's name, as shown by top -H, ps -L and /proc/PID/task/TID/comm


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_torch_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: one per available core) and one inter-op thread."""
    import torch  # here, not at the top: the bot's settings read available_cores without torch

    count = threads if threads and threads > 0 else available_cores()
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # may only be set once, before any parallel work; later calls are harmless to skip
        pass
    return count


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name at the OS level too (15 bytes at most), so an operator's
    ``top -H`` and the serving benchmark can tell the classifier from the decoders. OpenMP threads that
    torch starts from this thread inherit the name. Does nothing where prctl is missing (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_NAME, (name or threading.current_thread().name).encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
