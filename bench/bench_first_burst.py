"""The bot's first bursts after start-up: how fast are they answered, next to what the bare model can do?

    python bench/bench_first_burst.py [--bursts 30,30,30,100] [--repeats 1] [--env NAME=VALUE ...]
                                      [--compare FROZEN_GRAPH=0,1] [--checkpoint FILE]

Runs the real bot (``python -m bot``, its own process, a random-init checkpoint unless ``--checkpoint``)
against devtools' fake Telegram Bot API server on 127.0.0.1. The moment the bot's first getUpdates
arrives, the first burst of photos is pushed (every photo of a burst queued before that poll returns,
each from its own user); when all are answered, the next burst, and so on, in the same bot process.
For each burst: latency from the push to each answer (p50, p95, max), photos/s (answered / time to the
last answer), busy refusals, and photos/s as a ratio to the bare model.

The bare model is the fp32 eager network (``model.load_classifier``, no frozen graph) at its best batch
(``bench_model.measure_batches``: its fastest pass), measured in this bench process right before the bot
starts and right after it stops, so nothing else of the bench runs meanwhile; the ratio uses the mean
of the two. Also printed: the bot's start-up time (launch to its first getUpdates).

``--compare NAME=V1,V2`` runs the whole thing (bare model, bot, bursts, bare model) once per value,
alternating V1, V2, V1, V2 ... over ``--repeats`` rounds, so the variants meet the same drift of a
shared machine; the summary gives per variant the median and range. Numbers, not pass/fail; for
reference, the aim for the first burst is a ratio of at least 0.8.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_model import best, measure_batches  # noqa: E402
from harness import (  # noqa: E402
    FIRST_USER_ID,
    add_common_arguments,
    bot_environment,
    default_photo,
    is_busy,
    keep_log,
    make_random_checkpoint,
    median_range,
    message_key,
    percentile,
    print_machine,
    replies_to,
    shown_settings,
    start_bot,
    stop_bot,
    tail,
)

from devtools.fake_telegram import FakeTelegram  # noqa: E402
from model import load_classifier  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from model.threads import configure_torch_threads  # noqa: E402

AIM_FIRST_RATIO = 0.8


@dataclass
class BurstResult:
    photos: int
    latencies: list[float]  # seconds from the push to each answer that was not a refusal
    busy: int
    failed: list[str]

    @property
    def photos_per_second(self) -> float:
        return len(self.latencies) / max(self.latencies) if self.latencies else 0.0


@dataclass
class Run:
    variant: str
    startup: float
    bare_before: float  # the bare model's best photos/s before the bot started
    bare_after: float  # ... and after it stopped
    bursts: list[BurstResult] = field(default_factory=list)

    @property
    def bare(self) -> float:
        return statistics.mean([self.bare_before, self.bare_after])

    def ratio(self, burst: BurstResult) -> float:
        return burst.photos_per_second / self.bare if burst.latencies else float("nan")


def bare_photos_per_second(classifier, photo: bytes, batches: tuple[int, ...], repeats: int) -> tuple[float, int]:
    timing = best(measure_batches(classifier, photo, batches, repeats))
    return timing.photos_per_second, timing.batch


async def burst(fake: FakeTelegram, updates: list[dict], timeout: float) -> BurstResult:
    wanted = {message_key(u) for u in updates}
    mark = fake.mark()
    started = time.monotonic()
    for update in updates:  # push() does not yield to the loop: all are queued before the bot's poll returns
        await fake.push(update)
    answers = await fake.wait_for_calls(None, len(updates), replies_to(wanted), after=mark, timeout=timeout, ok=None)
    return BurstResult(len(updates), [c.at - started for c in answers if c.ok and not is_busy(c.text)],
                       sum(1 for c in answers if c.ok and is_busy(c.text)), [repr(c) for c in answers if not c.ok])


async def one_run(args, variant: str, extra: dict[str, str], checkpoint: Path, classifier, photo: bytes,
                  sizes: list[int]) -> Run:
    batches = tuple(int(b) for b in args.bare_batches.split(",") if b.strip())
    before, batch = await asyncio.to_thread(bare_photos_per_second, classifier, photo, batches, args.bare_repeats)
    with tempfile.TemporaryDirectory(prefix="bench-first-burst-") as tmp:
        workdir = Path(tmp)
        fake = await FakeTelegram().start()
        process = None
        try:
            env = bot_environment(fake, checkpoint, workdir / "data", extra)
            print(f"\n== {variant or 'run'}: bot settings {shown_settings(env)}")
            # Every update (with Telegram's smaller copies of the photo) is built before the bot starts.
            user = FIRST_USER_ID
            planned = []
            for size in sizes:
                planned.append([fake.photo_update(photo, user_id=user + i) for i in range(size)])
                user += size
            process, startup = await start_bot(fake, env, workdir, args.startup_timeout)
            result = Run(variant, startup, before, float("nan"))
            for updates in planned:  # the first burst goes out the moment the bot polls
                result.bursts.append(await burst(fake, updates, args.burst_timeout + len(updates)))
        finally:
            if process is not None:
                took, code = await stop_bot(process)
                if code not in (0, None):
                    print(f"SIGTERM -> exit status {code} in {took:.1f} s\n" + tail(workdir / "bot.log"))
                keep_log(workdir, args.keep_log)
            await fake.stop()
    result.bare_after, _ = await asyncio.to_thread(bare_photos_per_second, classifier, photo, (batch,), args.bare_repeats)
    print_run(result, batch)
    return result


def print_run(run: Run, batch: int) -> None:
    print(f"start-up until the first getUpdates: {run.startup:.1f} s; bare fp32 eager model at batch {batch}: "
          f"{run.bare_before:.2f} photos/s before the bot, {run.bare_after:.2f} after")
    print(f"{'burst':>5} | {'photos':>6} | {'answered':>8} | {'busy':>4} | {'p50 s':>6} | {'p95 s':>6} | {'max s':>6} | "
          f"{'photos/s':>8} | {'ratio':>5}")
    for number, b in enumerate(run.bursts, 1):
        print(f"{number:>5} | {b.photos:>6} | {len(b.latencies):>8} | {b.busy:>4} | {percentile(b.latencies, 0.5):>6.2f} | "
              f"{percentile(b.latencies, 0.95):>6.2f} | {max(b.latencies, default=float('nan')):>6.2f} | "
              f"{b.photos_per_second:>8.2f} | {run.ratio(b):>5.2f}")
        for problem in b.failed:
            print(f"      failed call: {problem}")


def print_summary(runs: list[Run]) -> None:
    print(f"\nsummary: median (range) over the runs of each variant; ratio = photos/s / the bare model's best photos/s "
          f"(aim for the first burst, for reference: >= {AIM_FIRST_RATIO})")
    for variant in dict.fromkeys(r.variant for r in runs):
        mine = [r for r in runs if r.variant == variant]
        print(f"{variant or 'all runs'} ({len(mine)} runs): start-up {median_range([r.startup for r in mine], '.1f')} s, "
              f"bare model {median_range([r.bare for r in mine])} photos/s")
        for index in range(len(mine[0].bursts)):
            bursts = [(r, r.bursts[index]) for r in mine if index < len(r.bursts)]
            print(f"  burst {index + 1} ({bursts[0][1].photos} photos): "
                  f"p50 {median_range([percentile(b.latencies, 0.5) for _, b in bursts])} s, "
                  f"p95 {median_range([percentile(b.latencies, 0.95) for _, b in bursts])} s, "
                  f"{median_range([b.photos_per_second for _, b in bursts])} photos/s, "
                  f"ratio {median_range([r.ratio(b) for r, b in bursts])}")


def variants(compare: str | None) -> list[tuple[str, dict[str, str]]]:
    if not compare:
        return [("", {})]
    name, equals, values = compare.partition("=")
    if not equals or not name or not values:
        raise SystemExit(f"--compare wants NAME=V1,V2[,...], got {compare!r}")
    return [(f"{name}={value}", {name: value}) for value in values.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", default="30,30,30,100", help="burst sizes, one after the other (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole thing per variant (default %(default)s)")
    parser.add_argument("--compare", metavar="NAME=V1,V2", help="one run per value of this bot setting, alternating")
    parser.add_argument("--bare-batches", default="1,4,8,16", help="bare model batch sizes tried before the bot starts")
    parser.add_argument("--bare-repeats", type=int, default=3, help="timed passes per bare batch size (the fastest counts)")
    parser.add_argument("--burst-timeout", type=float, default=60.0, help="seconds per burst, plus 1 s per photo")
    add_common_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    print_machine()
    sizes = [int(n) for n in args.bursts.split(",") if n.strip()]
    name, photo = default_photo(args.photo)
    threads = configure_torch_threads()
    keep_freed_memory()  # the bare model runs with the bot's malloc settings
    print(f"photo: {name}; bursts {sizes}; bare model on {threads} torch threads in this process")
    with tempfile.TemporaryDirectory(prefix="bench-first-burst-ckpt-") as tmp:
        checkpoint = args.checkpoint or make_random_checkpoint(Path(tmp))
        classifier = load_classifier(checkpoint)
        runs = []
        for _ in range(args.repeats):
            for variant, extra in variants(args.compare):  # alternating: V1, V2, V1, V2, ...
                runs.append(await one_run(args, variant, {**dict(args.env), **extra}, checkpoint, classifier, photo, sizes))
    print_summary(runs)
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
