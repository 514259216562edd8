"""Process tuning for serving: freed tensor memory is reused instead of faulted in again, threads carry names.

The memory check counts page faults, not seconds, in a fresh interpreter (mallopt changes the whole
process): a worker thread allocates and frees 40-60 MB tensors, the shape of ResNet50 activations at
batch 16. Untuned, glibc maps and unmaps each one and every page faults again; tuned, they come back
from the heap.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from model.threads import name_os_thread

REPO = Path(__file__).resolve().parents[2]

FAULTS_SCRIPT = """
import resource, sys, threading
import torch
import model.predict  # loaded as in every process that runs the model (importing model no longer does it)
from model.memory import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()

def work():
    for megabytes in (40, 60, 50, 60, 40) * 3:
        tensor = torch.ones(megabytes * 2**18)  # float32, every page touched
        del tensor

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not is_glibc(), reason="the mallopt tuning is for glibc")
def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    untuned, tuned = page_faults("default"), page_faults("tuned")
    touched_pages = (40 + 60 + 50 + 60 + 40) * 3 * 2**20 // 4096
    assert untuned > touched_pages // 2, (untuned, touched_pages)  # glibc's default: nearly every page, every time
    assert tuned < untuned // 4, (tuned, untuned)  # tuned: the first 60 MB, then reuse


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no /proc here")
def test_thread_names_reach_the_os():
    seen = {}

    def run():
        name_os_thread()
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    thread = threading.Thread(target=run, name="classify")
    thread.start()
    thread.join()
    assert seen["comm"] == "classify"
