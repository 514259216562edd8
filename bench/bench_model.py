"""The bare model's speed on this machine: ms per photo at batch 1, 2, 4, ... 32, and the best batch.

    python bench/bench_model.py [--batches 1,2,4,8,16,32] [--repeats 3] [--threads N] [--compile]

A random-init checkpoint is built and saved to a temporary folder, then loaded the way the bot loads
it (``model.load_classifier``: channels_last, eval, no grad), so the numbers are those of the real
serving path minus Telegram, download and decoding. The input is the seed saree photo, preprocessed
once and repeated to fill the batch. Numbers, not pass/fail: nothing here asserts a speed.
``bench/bench_serving.py`` imports :func:`measure_batches` to report the same figures beside its own.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the project's packages come first

from model import build_network, load_classifier, save_checkpoint  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from model.predict import Classifier  # noqa: E402
from model.threads import available_cores, configure_torch_threads  # noqa: E402

# shared/ sits beside the checkout (the layout of this project's machines and CI).
SEED_PHOTO = REPO.parent / "shared" / "datasets" / "seed" / "test" / "saree" / "saree1.jpeg"
CLASS_NAMES = ["kurti", "saree", "shirt"]
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    seconds: float  # fastest wall time of one forward pass of the whole batch (the least disturbed one)
    cpu_seconds: float = float("nan")  # CPU time (all threads) of that pass: steadier on a shared machine
    median_seconds: float = float("nan")  # the median pass: what the model sustains on this machine as it is now

    @property
    def cpu_ms_per_photo(self) -> float:
        return 1000.0 * self.cpu_seconds / self.batch

    @property
    def ms_per_photo(self) -> float:
        return 1000.0 * self.seconds / self.batch

    @property
    def photos_per_second(self) -> float:
        return self.batch / self.seconds

    @property
    def median_photos_per_second(self) -> float:
        return self.batch / self.median_seconds


def seed_photo_path(path: Path | None = None) -> Path:
    path = path or SEED_PHOTO
    if not path.is_file():
        raise SystemExit(f"photo {path} not found (pass --photo PATH)")
    return path


def make_random_checkpoint(folder: Path, class_names: list[str] = CLASS_NAMES) -> Path:
    """A random-init ResNet50 checkpoint (no ImageNet download), saved like training saves one."""
    torch.manual_seed(0)
    network = build_network(len(class_names), "none").eval()
    return save_checkpoint(folder / "model.pt", network, class_names, training={"weights": "none", "bench": True})


def measure_batches(classifier: Classifier, photo: Path, batches=DEFAULT_BATCHES, repeats: int = 3,
                    forward=None) -> list[BatchTiming]:
    """The fastest of ``repeats`` forward passes per batch size, after one warm-up pass of each size.

    The minimum, not the median: other processes only ever add time, so the fastest pass is the closest
    to what the model costs. CPU time is recorded too (it grows less than wall time under contention),
    and the median pass: on a shared machine that is what a run of several seconds gets, the fair
    thing to hold a serving run of several seconds against (bench_serving.py reports both).

    ``forward`` defaults to ``classifier.probabilities`` (network + softmax, inference mode, channels_last).
    """
    forward = forward or classifier.probabilities
    tensor = classifier.preprocess(classifier.open(photo))
    timings = []
    for batch in batches:
        inputs = tensor.unsqueeze(0).repeat(batch, 1, 1, 1)
        forward(inputs)  # warm-up: oneDNN picks its kernels for this shape on the first call
        samples = []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            forward(inputs)
            samples.append((time.perf_counter() - start, time.process_time() - cpu_start))
        wall, cpu = min(samples)
        timings.append(BatchTiming(batch, wall, cpu, statistics.median(seconds for seconds, _ in samples)))
    return timings


def best(timings: list[BatchTiming]) -> BatchTiming:
    return min(timings, key=lambda t: t.ms_per_photo)


def format_table(timings: list[BatchTiming], title: str) -> str:
    lines = [title, f"{'batch':>5} | {'ms/batch':>9} | {'ms/photo':>8} | {'photos/s':>8} | {'CPU ms/photo':>12} | "
                    f"{'median ms/photo':>15}", "-" * 75]
    for t in timings:
        lines.append(f"{t.batch:>5} | {1000 * t.seconds:>9.1f} | {t.ms_per_photo:>8.1f} | {t.photos_per_second:>8.2f} | "
                     f"{t.cpu_ms_per_photo:>12.1f} | {1000 * t.median_seconds / t.batch:>15.1f}")
    top = best(timings)
    lines.append(f"best batch {top.batch}: {top.ms_per_photo:.1f} ms/photo ({top.photos_per_second:.2f} photos/s)")
    return "\n".join(lines)


def compiled_forward(classifier: Classifier, budget_s: float):
    """``torch.compile`` of the network, or None (with the reason printed) when it fails or is too slow."""
    try:
        compiled = torch.compile(classifier.network)
    except Exception as exc:  # the backend may be missing a compiler on a bare server
        print(f"torch.compile unavailable: {type(exc).__name__}: {exc}")
        return None

    @torch.inference_mode()
    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(compiled(batch.contiguous(memory_format=torch.channels_last)).float(), dim=1)

    start = time.perf_counter()
    try:
        forward(torch.zeros(1, 3, 224, 224))
    except Exception as exc:
        print(f"torch.compile failed on the first call: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    took = time.perf_counter() - start
    print(f"torch.compile: first call (compilation) took {took:.1f} s")
    if took > budget_s:
        print(f"torch.compile skipped: compilation took longer than the {budget_s:.0f} s budget")
        return None
    return forward


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)),
                        help="comma-separated batch sizes (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per batch size; the fastest is shown")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: one per core)")
    parser.add_argument("--checkpoint", type=Path, help="a real checkpoint instead of a random-init one")
    parser.add_argument("--photo", type=Path, default=SEED_PHOTO, help="the input photo (default: the seed saree)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) of the network")
    parser.add_argument("--compile-budget", type=float, default=300.0,
                        help="give up on torch.compile when its first call takes longer (seconds)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    threads = configure_torch_threads(args.threads or None)
    keep_freed_memory()  # as the bot does (model/memory.py)
    photo = seed_photo_path(args.photo)
    print(f"torch {torch.__version__}, {threads} intra-op threads, {available_cores()} cores available, photo {photo.name}")
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        checkpoint = args.checkpoint or make_random_checkpoint(Path(tmp))
        classifier = load_classifier(checkpoint)
        eager = measure_batches(classifier, photo, batches, args.repeats)
        print(format_table(eager, "eager (inference_mode, channels_last)"))
        if classifier.use_frozen_graph():
            frozen = measure_batches(classifier, photo, batches, args.repeats)
            print(format_table(frozen, "frozen TorchScript graph (what the bot serves with; model/graph.py)"))
        if args.compile:
            forward = compiled_forward(classifier, args.compile_budget)
            if forward is not None:
                compiled = measure_batches(classifier, photo, batches, args.repeats, forward=forward)
                print(format_table(compiled, "torch.compile (inductor; recompiles per new batch size, not timed)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
