"""Keep freed memory in the process for the next batch, instead of handing it back to the kernel.

ResNet50's activations are tens of MB per tensor at batch 8 to 16. glibc's malloc serves blocks that
large with ``mmap`` and gives them back with ``munmap`` as soon as torch frees them, so each forward pass
touches fresh pages, thousands of page faults and milliseconds of kernel time per photo (recorded in
docs/benchmarks.md) whenever the batch size changes, which micro-batches do all the time. (glibc's adaptive threshold only
helps when the same size repeats, which is why a benchmark at one fixed batch size barely shows it.)
Threads other than the main one allocate from arenas made of 64 MB heaps that glibc unmaps as soon as
they are empty, so the classifier's thread kept faulting even with a higher threshold.

So: one arena for every thread, a high mmap threshold and a trim threshold above the working set. The
large blocks come from the one heap and stay there; resident memory stays at the peak of the largest
batch (which it reaches anyway) and the faults stop. The price is one malloc lock for all threads,
which is cheap here: Python's small objects never reach malloc, and torch makes few large requests.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MIB = 1024 * 1024


def keep_freed_memory(mmap_threshold: int = 256 * MIB, trim_threshold: int = 1024 * MIB) -> bool:
    """Tune glibc's malloc for repeated large tensors; ``False`` where that is not glibc (nothing changed).

    Call it once, early (before the threads that run the model start), in the process that runs the
    model: the bot, a benchmark. Calling it again is harmless.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt; their allocators behave differently
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, trim_threshold), (_M_MMAP_THRESHOLD, mmap_threshold))
    refused = [number for number, value in settings if mallopt(number, value) != 1]  # 1 means accepted
    if refused:
        log.warning("mallopt refused settings %s; forward passes will page-fault more", refused)
    return not refused

