"""Why the bot shortens Python's GIL turns: a forward pass beside a busy Python thread, side by side.

    python bench/bench_gil.py [--batch 16] [--intervals 5,1,0.5]

torch releases the GIL inside each operator but takes it back between them (module calls, the residual
add...), a few hundred times per ResNet50 forward pass. When another thread is running Python (the bot's
event loop parsing HTTP), each of those hand-backs can wait for that thread's whole turn: 5 ms by default
(``sys.getswitchinterval()``). This prints ms per photo for the bare forward pass alone, then beside a
thread that runs pure Python, at each switch interval. Numbers, not pass/fail.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from bench_model import SEED_PHOTO, make_random_checkpoint, measure_batches, seed_photo_path  # noqa: E402

from model import load_classifier  # noqa: E402
from model.threads import configure_torch_threads  # noqa: E402

BUSY_TURN_S = 0.0015  # with duty < 1: Python runs this long at a time, then the thread sleeps


class BusyPythonThread:
    """A thread that runs pure Python (holding the GIL for whole turns) until the block ends.

    ``duty`` < 1: busy ``BUSY_TURN_S`` at a time, ``duty`` of one core in all, like the bot's event loop
    during a burst (bench_interference.py); 0: no thread at all.
    """

    def __init__(self, duty: float = 1.0):
        self.duty = duty

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        if self.duty > 0:
            self._thread.start()
        return self

    def _spin(self) -> None:
        pause = BUSY_TURN_S * (1 - self.duty) / self.duty if self.duty < 1 else 0.0
        while not self._stop.is_set():
            if not pause:
                sum(range(200))
                continue
            until = time.perf_counter() + BUSY_TURN_S
            while time.perf_counter() < until:
                sum(range(100))
            time.sleep(pause)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per case (the fastest counts)")
    parser.add_argument("--intervals", default="5,1,0.5", help="switch intervals to try, in ms")
    args = parser.parse_args(argv)
    threads = configure_torch_threads()
    with tempfile.TemporaryDirectory(prefix="bench-gil-") as tmp:
        classifier = load_classifier(make_random_checkpoint(Path(tmp)))
    photo = seed_photo_path(SEED_PHOTO)

    def ms_per_photo() -> float:
        return measure_batches(classifier, photo, (args.batch,), args.repeats)[0].ms_per_photo

    default = sys.getswitchinterval()
    print(f"batch {args.batch}, {threads} torch threads; ms per photo, the fastest of {args.repeats} passes")
    print(f"  alone: {ms_per_photo():.1f}")
    try:
        for interval_ms in (float(value) for value in args.intervals.split(",")):
            sys.setswitchinterval(interval_ms / 1000)
            with BusyPythonThread():
                took = ms_per_photo()
            print(f"  beside a busy Python thread, GIL turns of {interval_ms:g} ms: {took:.1f}")
    finally:
        sys.setswitchinterval(default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
