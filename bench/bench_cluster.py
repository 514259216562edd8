"""The bot against the bot as a gateway to a local Ray Serve cluster, on this machine, in one run.

    flock /tmp/bench.lock python bench/bench_cluster.py [--repeats 1] [--burst 30] [--users 6] [--singles 10]

Variants, interleaved round by round: ``bare`` (``python -m bot``, the model in its own process), and the
bot with INFERENCE_ADDRESS in front of ``python -m model serve`` with 1, then 2 Explainer replicas (each
replica reserves one core; the Classifier has its own replica). Each round starts the variant afresh and
measures, against devtools' fake Telegram on 127.0.0.1 (random-init checkpoint, the bot's default heat maps):

- cluster start-up: from launching ``python -m model serve`` to its ``inference address:`` line;
- one classification at a time (``--singles`` photos, one after another): push -> answer, median;
- a burst of ``--burst`` photos pushed at once: until the last answer, and photos/s;
- ``--users`` simultaneous /why (bench_why_load's round): first and final map, median and max;
- the bot's RSS (VmRSS of its process, and VmHWM, its peak) after all that; with INFERENCE_ADDRESS, whether
  torch is mapped into it at all.

Numbers, not pass/fail. The cluster runs on the same cores as the bot here, so it shows the overhead and the
isolation of heat maps from photos, not the capacity a second machine adds (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_why_load import one_round  # noqa: E402
from harness import (  # noqa: E402
    FIRST_USER_ID,
    bot_environment,
    default_photo,
    distinct_photos,
    is_busy,
    make_random_checkpoint,
    median_range,
    message_key,
    print_machine,
    replies_to,
    start_bot,
    stop_bot,
    tail,
)

from devtools.fake_telegram import FakeTelegram  # noqa: E402
from devtools.serve_process import ServeProcess, process_title, write_token  # noqa: E402

VARIANTS = {"bare": None, "cluster, 1 explainer": 1, "cluster, 2 explainers": 2}


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0])
    return values


def cluster_memory(serve: ServeProcess) -> dict[str, int]:
    """MB of RSS of each kind of process under ``python -m model serve`` (summed over a kind)."""
    out: dict[str, int] = {}
    for pid in serve.tree():
        title = process_title(pid)
        kind = title.split()[0].rsplit("/", 1)[-1] if not title.startswith("ray::") else title.split()[0]
        if "python" in kind:  # name Ray's python processes by their script or module
            words = title.split()
            kind = next((w.rsplit("/", 1)[-1] for w in words[1:] if w.endswith(".py") or w.startswith("ray.")
                         or w == "model"), kind)
        try:
            out[kind] = out.get(kind, 0) + memory_kb(pid)["VmRSS"] // 1024
        except (OSError, KeyError):
            continue
    return out


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


async def singles(fake: FakeTelegram, photos: list[bytes], user: int) -> list[float]:
    latencies = []
    for photo in photos:
        update = fake.photo_update(photo, user_id=user)
        started = time.monotonic()
        await fake.push(update)
        answer = await fake.wait_for_answer(update["message"], timeout=60)
        latencies.append(answer.at - started)
    return latencies


async def burst(fake: FakeTelegram, photos: list[bytes], first_user: int) -> tuple[float, int]:
    updates = [fake.photo_update(photo, user_id=first_user + i) for i, photo in enumerate(photos)]
    mark = fake.mark()
    started = time.monotonic()
    for update in updates:
        await fake.push(update)
    answers = await fake.wait_for_calls(None, len(updates), replies_to({message_key(u) for u in updates}), after=mark,
                                        timeout=300)
    return max(a.at for a in answers) - started, sum(is_busy(a.text) for a in answers)


async def one_variant(name: str, explainers: int | None, args, workdir: Path, checkpoint: Path, token: Path,
                      base_photo: bytes, round_number: int) -> dict:
    fake = await FakeTelegram().start()
    serve, bot, result = None, None, {"variant": name}
    try:
        extra = {}
        if explainers is not None:
            serve = ServeProcess(checkpoint, token, workdir / f"serve-{round_number}-{explainers}.log",
                                 ["--cpus", str(1 + explainers), "--replica-cpus", "1", "--classify-replicas", "1",
                                  "--explain-replicas", str(explainers)])
            launched = time.monotonic()
            await asyncio.to_thread(serve.start)
            result["startup"] = time.monotonic() - launched
            extra = {"INFERENCE_ADDRESS": serve.address, "INFERENCE_TOKEN_FILE": str(serve.inference_token_file)}
        env = bot_environment(fake, checkpoint, workdir / f"data-{name[:4]}-{round_number}", extra)
        bot, _ = await start_bot(fake, env, workdir, args.startup_timeout, log=f"bot-{round_number}.log")
        user = FIRST_USER_ID + 1000 * round_number
        photos = distinct_photos(base_photo, args.singles + args.burst, start=10_000 * round_number)
        result["single"] = statistics.median(await singles(fake, photos[:args.singles], user))
        result["burst_s"], result["burst_busy"] = await burst(fake, photos[args.singles:], user + 1)
        timings = await one_round(fake, distinct_photos(base_photo, args.users, start=10_000 * round_number + 5000),
                                  user + 100, args.timeout)
        result["first"] = [t.first for t in timings if t.first is not None]
        result["final"] = [t.final for t in timings if t.final is not None]
        result["notes"] = [t.note for t in timings if t.note]
        result.update(memory_kb(bot.pid))
        result["torch_mapped"] = maps_torch(bot.pid)
        if serve is not None:
            result["cluster_rss"] = cluster_memory(serve)
    finally:
        if bot is not None:
            took, code = await stop_bot(bot)
            if code not in (0, None):
                print(tail(workdir / f"bot-{round_number}.log"))
        if serve is not None:
            left = await asyncio.to_thread(serve.stop)
            result["left_behind"] = len(left)
        await fake.stop()
    return result


def print_result(r: dict, burst_size: int) -> None:
    startup = f"{r['startup']:.1f} s" if "startup" in r else "-"
    print(f"  {r['variant']:<22} start-up {startup:>7} | one photo {r['single'] * 1000:6.0f} ms | burst of "
          f"{burst_size}: {r['burst_s']:5.1f} s ({burst_size / r['burst_s']:4.1f} photos/s, {r['burst_busy']} busy) | "
          f"/why first median {statistics.median(r['first']) if r['first'] else float('nan'):5.1f} s max "
          f"{max(r['first'], default=float('nan')):5.1f} s, final median "
          f"{statistics.median(r['final']) if r['final'] else float('nan'):5.1f} s max {max(r['final'], default=float('nan')):5.1f} s"
          f" | RSS {r.get('VmRSS', 0) / 1024:4.0f} MB (peak {r.get('VmHWM', 0) / 1024:4.0f}) torch mapped: "
          f"{r['torch_mapped']}" + (f" | left behind: {r['left_behind']}" if "left_behind" in r else "")
          + (f" | notes: {r['notes']}" if r['notes'] else ""))
    if "cluster_rss" in r:
        print(f"    cluster processes, RSS MB: {', '.join(f'{k} {v}' for k, v in sorted(r['cluster_rss'].items()))}")


def print_summary(results: list[dict], burst_size: int) -> None:
    print("\nover the rounds (median, range):")
    for name in VARIANTS:
        rows = [r for r in results if r["variant"] == name]
        if not rows:
            continue
        print(f"  {name:<22} start-up {median_range([r.get('startup', float('nan')) for r in rows], '.1f')} s; "
              f"one photo {median_range([r['single'] * 1000 for r in rows], '.0f')} ms; "
              f"burst {median_range([burst_size / r['burst_s'] for r in rows], '.1f')} photos/s; "
              f"/why last first map {median_range([max(r['first'], default=float('nan')) for r in rows], '.1f')} s, "
              f"last final map {median_range([max(r['final'], default=float('nan')) for r in rows], '.1f')} s; "
              f"RSS {median_range([r.get('VmRSS', 0) / 1024 for r in rows], '.0f')} MB")
    bare = [r["single"] for r in results if r["variant"] == "bare"]
    for name in list(VARIANTS)[1:]:
        rows = [r["single"] for r in results if r["variant"] == name]
        if bare and rows:
            print(f"  extra latency of one classification, {name}: "
                  f"{(statistics.median(rows) - statistics.median(bare)) * 1000:+.0f} ms (medians)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all the variants (default %(default)s)")
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=400.0, help="seconds for every final map of a /why round")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    print_machine()
    print("other work may share this machine; the variants run one after another, interleaved per round")
    name, base_photo = default_photo(args.photo)
    print(f"photo: {name}; burst {args.burst}, {args.users} simultaneous /why, {args.singles} single photos")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = Path(tmp)
        checkpoint = make_random_checkpoint(workdir)
        token = write_token(workdir / "auth_token", os.urandom(16).hex())
        results = []
        for round_number in range(args.repeats):
            print(f"round {round_number + 1}:")
            for variant in args.variants:
                try:
                    results.append(await one_variant(variant, VARIANTS[variant], args, workdir, checkpoint, token,
                                                     base_photo, round_number))
                except AssertionError as error:  # one variant's failure: say what happened, go on with the rest
                    print(f"  {variant}: FAILED: {str(error)[:300]}\n{tail(workdir / f'bot-{round_number}.log', 15)}")
                    continue
                print_result(results[-1], args.burst)
        print_summary(results, args.burst)
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
