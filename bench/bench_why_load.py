"""N users ask /why at the same moment: how long until each one sees a heat map, and the finer one?

    python bench/bench_why_load.py [--users 6] [--repeats 3] [--env WHY_PATCH=16 ...] [--checkpoint FILE]

Runs the real bot (``python -m bot``, its own process, a random-init checkpoint unless ``--checkpoint``)
against devtools' fake Telegram Bot API server on 127.0.0.1. Each round, N new users each send a photo
and get its answer; then all N send /why in the same instant (N updates queued before the bot's poll
returns). For each user it reports the time from that push to their first heat map (the coarse one,
``sendPhoto``) and to their final one (the ``editMessageMedia`` that replaces it in place), then the
median and max of both, and the final maps a minute (N / the last final map's time); over ``--repeats`` rounds,
the median and range of those. ``--photos-during K``: K other users each send a photo while the maps run (one
every ``--photo-gap`` seconds from the /why push): their answer latency shows whether classifications still
come first.

Heat-map settings are the bot's defaults (WHY_COARSE_PATCH/STRIDE 56/28, WHY_PATCH/STRIDE 16/8) unless
``--env`` says otherwise. Every user's photo differs (by one pixel) so the heat-map cache, keyed by the
photo's content, never answers one from another. Numbers, not pass/fail; for reference, issue 28's aims:
every first map within 8 s, every final map within 30 s, at least 12 final maps a minute.
Every wait is bounded and the bot is always stopped.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from harness import (  # noqa: E402
    FIRST_USER_ID,
    add_common_arguments,
    bot_environment,
    default_photo,
    distinct_photos,
    is_busy,
    keep_log,
    make_random_checkpoint,
    median_range,
    message_key,
    print_machine,
    replies_to,
    shown_settings,
    start_bot,
    stop_bot,
    tail,
)

from devtools.fake_telegram import FakeTelegram  # noqa: E402

AIM_FIRST_S = 8.0
AIM_FINAL_S = 30.0
AIM_MAPS_PER_MINUTE = 12.0
PHOTO_USER_OFFSET = 100_000  # the users who send photos during the maps


@dataclass
class UserTiming:
    user: int
    first: float | None = None  # seconds from the /why push to the first heat map (sendPhoto)
    final: float | None = None  # ... to the editMessageMedia that replaced it with the finer one
    note: str = ""  # a refusal ("busy") or what went wrong

    @property
    def done(self) -> bool:
        return self.final is not None or bool(self.note)


def timings_since(fake: FakeTelegram, mark: int, started: float, whys: list[dict]) -> list[UserTiming]:
    """What each user got after their /why (pushed at ``started``), from the fake server's calls."""
    out = []
    for update in whys:
        chat_id, why_id = message_key(update)
        timing = UserTiming(chat_id)
        calls = [c for c in fake.calls[mark:] if c.chat_id == chat_id]
        first = next((c for c in calls if c.method == "sendPhoto" and c.ok), None)
        if first is not None:
            timing.first = first.at - started
            shown = first.result["message_id"]
            final = next((c for c in calls if c.method == "editMessageMedia" and c.ok
                          and c.params.get("message_id") == shown), None)
            timing.final = final.at - started if final is not None else None
        refusal = next((c for c in calls if c.method == "sendMessage" and c.ok and c.reply_to == why_id), None)
        if refusal is not None and timing.first is None:
            timing.note = ("busy: " if is_busy(refusal.text) else "text: ") + refusal.text[:60].replace("\n", " ")
        failed = [c for c in calls if not c.ok and c.method != "getUpdates"]
        if failed:
            timing.note += f" failed calls: {failed}"
        out.append(timing)
    return out


async def photos_during(fake: FakeTelegram, photos: list[bytes], first_user: int, gap: float) -> list[tuple[dict, float]]:
    """Push one photo every ``gap`` seconds, each from its own user; (update, pushed at) for each."""
    pushed = []
    for number, photo in enumerate(photos):
        await asyncio.sleep(gap)
        update = fake.photo_update(photo, user_id=first_user + number)
        pushed.append((update, time.monotonic()))
        await fake.push(update)
    return pushed


def photo_latencies(fake: FakeTelegram, mark: int, pushed: list[tuple[dict, float]]) -> list[float | None]:
    """Seconds from each photo's push to its answer (None: not answered, or refused as busy)."""
    out = []
    for update, at in pushed:
        answer = next((c for c in fake.calls[mark:] if replies_to({message_key(update)})(c) and c.ok), None)
        out.append(answer.at - at if answer is not None and not is_busy(answer.text) else None)
    return out


async def one_round(fake: FakeTelegram, photos: list[bytes], first_user: int, timeout: float,
                    during: list[bytes] = (), gap: float = 2.0) -> tuple[list[UserTiming], list[float | None]]:
    users = len(photos)
    updates = [fake.photo_update(photo, user_id=first_user + i) for i, photo in enumerate(photos)]
    mark = fake.mark()
    for update in updates:
        await fake.push(update)
    answers = await fake.wait_for_calls(None, users, replies_to({message_key(u) for u in updates}), after=mark,
                                        timeout=timeout)
    refused = [a for a in answers if is_busy(a.text)]
    if refused:
        print(f"  ({len(refused)} of the photos were refused as busy: their /why explains nothing new)")

    whys = [fake.command_update("/why", user_id=first_user + i) for i in range(users)]  # built before the clock
    mark = fake.mark()
    started = time.monotonic()
    for update in whys:  # push() does not yield to the loop: all N are queued before the bot's poll returns
        await fake.push(update)
    sender = asyncio.ensure_future(photos_during(fake, list(during), first_user + PHOTO_USER_OFFSET, gap))
    deadline = started + timeout
    while True:
        timings = timings_since(fake, mark, started, whys)
        if all(t.done for t in timings) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # the times come from the calls' arrival, not from this loop
    for t in timings:
        if not t.done:
            t.note = f"no final map within {timeout:.0f} s"
    pushed = await sender
    try:
        await fake.wait_for_calls(None, len(pushed), replies_to({message_key(u) for u, _ in pushed}), after=mark,
                                  timeout=60)
    except AssertionError:
        pass  # an unanswered photo is reported as such (None)
    return timings, photo_latencies(fake, mark, pushed)


def seconds(value: float | None) -> str:
    return f"{value:7.2f}" if value is not None else f"{'-':>7}"


def maps_a_minute(timings: list[UserTiming]) -> float:
    finals = [t.final for t in timings if t.final is not None]
    return 60.0 * len(finals) / max(finals) if finals else 0.0


def print_round(number: int, timings: list[UserTiming], photos: list[float | None]) -> None:
    print(f"round {number + 1}: {'user':>7} | {'first s':>7} | {'final s':>7} | note")
    for t in timings:
        print(f"         {t.user:>7} | {seconds(t.first)} | {seconds(t.final)} | {t.note}")
    firsts = [t.first for t in timings if t.first is not None]
    finals = [t.final for t in timings if t.final is not None]
    print(f"         first map: median {seconds(statistics.median(firsts) if firsts else None).strip()} s, "
          f"max {seconds(max(firsts, default=None)).strip()} s ({len(firsts)}/{len(timings)} users); "
          f"final map: median {seconds(statistics.median(finals) if finals else None).strip()} s, "
          f"max {seconds(max(finals, default=None)).strip()} s ({len(finals)}/{len(timings)}); "
          f"{maps_a_minute(timings):.1f} final maps a minute")
    if photos:
        answered = [p for p in photos if p is not None]
        print(f"         photos sent during the maps: {len(answered)}/{len(photos)} answered, latency "
              f"{', '.join(seconds(p).strip() for p in photos)} s")


def print_summary(rounds: list[list[UserTiming]], photos: list[list[float | None]]) -> None:
    def per_round(pick, reduce):
        values = [reduce(v) for v in ([pick(t) for t in r if pick(t) is not None] for r in rounds) if v]
        return median_range(values)

    print(f"over {len(rounds)} rounds (median of the rounds, range):")
    print(f"  first map: median {per_round(lambda t: t.first, statistics.median)} s, "
          f"max {per_round(lambda t: t.first, max)} s")
    print(f"  final map: median {per_round(lambda t: t.final, statistics.median)} s, "
          f"max {per_round(lambda t: t.final, max)} s")
    print(f"  final maps a minute: {median_range([maps_a_minute(r) for r in rounds], '.1f')} (aim >= {AIM_MAPS_PER_MINUTE:.0f})")
    during = [p for r in photos for p in r]
    if during:
        answered = [p for p in during if p is not None]
        print(f"  photos during the maps: {len(answered)}/{len(during)} answered; latency median "
              f"{median_range(answered)} s, max {seconds(max(answered, default=None)).strip()} s")
    for name, aim, pick in (("first", AIM_FIRST_S, lambda t: t.first), ("final", AIM_FINAL_S, lambda t: t.final)):
        values = [pick(t) for r in rounds for t in r]
        late = sum(1 for f in values if f is None or f > aim)
        print(f"  aim: every {name} map within {aim:.0f} s; {len(values) - late}/{len(values)} were "
              f"(slowest {seconds(max((f for f in values if f is not None), default=None)).strip()} s)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6, help="users asking /why at once (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each with N new users (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per round for every final map")
    parser.add_argument("--photos-during", type=int, default=6, help="photos sent by other users while the maps run")
    parser.add_argument("--photo-gap", type=float, default=2.0, help="seconds between those photos")
    add_common_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    print_machine()
    name, base_photo = default_photo(args.photo)
    with tempfile.TemporaryDirectory(prefix="bench-why-") as tmp:
        workdir = Path(tmp)
        checkpoint = args.checkpoint or make_random_checkpoint(workdir)
        fake = await FakeTelegram().start()
        process = None
        try:
            env = bot_environment(fake, checkpoint, workdir / "data", dict(args.env))
            print(f"photo: {name}; {args.users} users x {args.repeats} rounds; bot settings: {shown_settings(env)}")
            process, startup = await start_bot(fake, env, workdir, args.startup_timeout)
            print(f"start-up until the first getUpdates: {startup:.1f} s")
            rounds, during = [], []
            for number in range(args.repeats):
                photos = distinct_photos(base_photo, args.users, start=number * args.users)
                extra = distinct_photos(base_photo, args.photos_during, start=10_000 + number * args.photos_during)
                timings, latencies = await one_round(fake, photos, FIRST_USER_ID + number * args.users, args.timeout,
                                                     extra, args.photo_gap)
                rounds.append(timings)
                during.append(latencies)
                print_round(number, timings, latencies)
            print()
            print_summary(rounds, during)
        finally:
            if process is not None:
                took, code = await stop_bot(process)
                print(f"SIGTERM -> exit status {code} in {took:.1f} s")
                if code not in (0, None):
                    print(tail(workdir / "bot.log"))
                keep_log(workdir, args.keep_log)
            await fake.stop()
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
