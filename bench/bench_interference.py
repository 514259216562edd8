"""Why the bot runs one classification worker per core: the inference service beside other work, side by side.

    python bench/bench_interference.py [--photos 48] [--duty 0.3] [--rounds 4] [--workers 1,2]

In the bot the model never has the cores to itself: the event loop (HTTP, JSON) and the decoders take
about a third of one core while a burst is classified (bench/bench_serving.py, CPU ms per photo by
thread). torch's intra-op threads wait for each other at every layer, so when that other work takes one
of two cores for a moment, a batch on two threads stalls on both; two batches on one thread each
(``CLASSIFY_WORKERS=2``) lose only that moment on one core.

This runs the bot's real :class:`bot.inference.local.InferenceScheduler` (the bot's settings, frozen graph,
micro-batching) on ``--photos`` preprocessed photos queued at once, for each ``--workers`` value,
alone and beside a thread that runs Python for 1.5 ms at a time, ``--duty`` of one core in all (it holds
the GIL like the event loop does). Rounds alternate the cases, so drift on a shared machine hits all of
them alike. Prints photos/s (median and best of the rounds) and each case against the best median alone:
on 2 cores, work that takes 0.3 of a core leaves at most 1.7 / 2 = 0.85 for the model. Numbers, not
pass/fail; random-init weights, no network.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import dataclasses  # noqa: E402

from bench_gil import BusyPythonThread  # noqa: E402
from bench_model import SEED_PHOTO, make_random_checkpoint, seed_photo_path  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.inference.local import InferenceScheduler  # noqa: E402
from model import load_classifier  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from model.threads import available_cores, configure_torch_threads  # noqa: E402


async def photos_per_second(service: InferenceScheduler, tensor, photos: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(service.classify_tensor(f"chat{i}", tensor) for i in range(photos)))
    return photos / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> int:
    threads = configure_torch_threads()
    keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="bench-interference-") as tmp:
        classifier = load_classifier(make_random_checkpoint(Path(tmp)))
    classifier.use_frozen_graph()  # once, shared by every case (FROZEN_GRAPH=1: like for like)
    tensor = classifier.preprocess(classifier.open(seed_photo_path(SEED_PHOTO).read_bytes()))
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    services = {}
    for workers in workers_list:
        config = dataclasses.replace(Settings(token="bench").scheduler_config(), torch_threads=threads,
                                     classify_workers=workers, max_batch=args.max_batch, frozen_graph=True,
                                     max_batch_wait_s=args.max_batch_wait_ms / 1000, warm_up_batch=args.max_batch,
                                     queue_size=max(args.photos, 128), per_chat_queue=max(args.photos, 20))
        services[workers] = InferenceScheduler(classifier, config)
        services[workers].start()
        await services[workers].ready()
    try:
        for service in services.values():  # warm-up: every batch shape and thread count once
            await photos_per_second(service, tensor, args.photos)
        results: dict[tuple[int, float], list[float]] = {(w, d): [] for w in workers_list for d in (0.0, args.duty)}
        for round_number in range(args.rounds):
            for (workers, duty), values in results.items():
                with BusyPythonThread(duty):
                    values.append(await photos_per_second(services[workers], tensor, args.photos))
            print(f"round {round_number + 1}/{args.rounds}: "
                  + ", ".join(f"{w} worker(s){' busy' if d else ''} {v[-1]:.1f}" for (w, d), v in results.items()),
                  flush=True)
    finally:
        for service in services.values():
            await service.stop()
    best_alone = max(statistics.median(results[(w, 0.0)]) for w in workers_list)
    print(f"\n{available_cores()} cores, {threads} torch threads, {args.photos} photos queued at once, MAX_BATCH "
          f"{args.max_batch}; beside: a Python thread busy {args.duty:.0%} of one core; photos/s over {args.rounds} rounds")
    print(f"{'workers':>7} | {'beside':>6} | {'median':>6} | {'best':>6} | {'/ best alone':>12}")
    for (workers, duty), values in results.items():
        print(f"{workers:>7} | {'busy' if duty else 'none':>6} | {statistics.median(values):>6.2f} | {max(values):>6.2f} | "
              f"{statistics.median(values) / best_alone:>12.2f}")
    print(f"best alone (median): {best_alone:.2f} photos/s; the most the model can keep beside that work: "
          f"{(threads - args.duty) / threads:.2f}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48, help="photos queued at once per measurement")
    parser.add_argument("--duty", type=float, default=0.3, help="the busy thread's share of one core (0..1)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="CLASSIFY_WORKERS values to compare")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-batch-wait-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not 0 < args.duty < 1:
        parser.error("--duty must be between 0 and 1")
    return args


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
