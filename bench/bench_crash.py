"""The bot is killed (SIGKILL) while photos are in flight and started again: which photos get answered?

    python bench/bench_crash.py [--photos 12] [--kill-after 0.3,1.5] [--kill-on updates|downloads]
                                [--repeats 3] [--wait 60] [--env NAME=VALUE ...] [--checkpoint FILE]

Runs the real bot (``python -m bot``, its own process, a random-init checkpoint unless ``--checkpoint``)
against devtools' fake Telegram Bot API server on 127.0.0.1, with its DATA_DIR in a temporary folder.
K users each send a photo (``--push-after`` seconds after the bot first polled); a set delay after the bot
fetched them (``--kill-on updates``: after the
getUpdates that returned the last of them; ``downloads``: after the bot downloaded the Kth photo) the
bot gets SIGKILL: no shutdown, nothing flushed. It is then started again with the same DATA_DIR against
the same fake server, which keeps its state and behaves like Telegram: an update is delivered again
until a getUpdates offset past it confirms it, and never after. Once every photo has an answer (or
``--wait`` seconds after the restart at most) and no new answer came for ``--settle`` seconds, it reports:

- answered before the kill, answered only after the restart, never answered (lost), answered more
  than once (duplicates); an answer to a photo is a sendMessage replying to that photo's message;
- how many of the K updates Telegram (the fake) delivered again to the restarted bot;
- when the trigger came and when the kill happened, in seconds from pushing the photos.

Per kill delay, ``--repeats`` times, then the median and range of each. Numbers, not pass/fail: the bench
measures whatever the bot does (lose them, or resume them from a journal). Every wait is bounded and
both bot processes are always stopped.
"""
from __future__ import annotations

import argparse
import asyncio
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
    kill_bot,
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

SETTLE_STEP_S = 0.05


@dataclass
class Trial:
    delay: float
    photos: int
    before: int = 0  # photos with an answer before the kill
    after: int = 0  # photos whose first answer came from the restarted bot
    lost: int = 0  # photos never answered
    duplicates: int = 0  # photos answered more than once
    busy: int = 0  # answers that were "busy, try again" refusals (counted as answers above)
    redelivered: int = 0  # of the K updates, how many getUpdates handed to the restarted bot
    trigger_at: float = float("nan")  # seconds from the push to the trigger (the photos fetched or downloaded)
    kill_at: float = float("nan")  # seconds from the push to the SIGKILL
    startup: float = float("nan")  # the restarted bot's launch to its first getUpdates
    note: str = ""


def photo_file_ids(update: dict) -> set[str]:
    return {size["file_id"] for size in update["message"].get("photo") or []}


async def wait_for_trigger(fake: FakeTelegram, updates: list[dict], kill_on: str, after: int, timeout: float):
    """The call after which the delay starts: the getUpdates that returned the last photo, or the Kth download."""
    if kill_on == "updates":
        last = updates[-1]["update_id"]
        return await fake.wait_for_call("getUpdates", lambda c: any(u["update_id"] == last for u in c.result or []),
                                        after=after, timeout=timeout)
    files = [photo_file_ids(u) for u in updates]

    def downloaded(call) -> bool:
        fetched = {c.params.get("file_id") for c in fake.find_calls("FILE", after=after, ok=None)} | {call.params.get("file_id")}
        return call.method == "FILE" and all(ids & fetched for ids in files)

    return await fake.wait_for_call("FILE", downloaded, after=after, timeout=timeout, ok=None)


def answers_by_photo(fake: FakeTelegram, wanted: set[tuple[int, int]], start: int, end: int | None = None) -> dict:
    """(chat id, message id) of each photo -> the bot's answers to it among ``fake.calls[start:end]``."""
    is_answer = replies_to(wanted)
    found: dict[tuple[int, int], list] = {key: [] for key in wanted}
    for call in fake.calls[start:end]:
        if call.ok and is_answer(call):
            found[(call.chat_id, call.reply_to)].append(call)
    return found


async def trial(args, delay: float, checkpoint: Path, photos: list[bytes], first_user: int) -> Trial:
    result = Trial(delay, len(photos))
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        workdir = Path(tmp)
        fake = await FakeTelegram().start()
        processes = []
        try:
            env = bot_environment(fake, checkpoint, workdir / "data", dict(args.env))
            process, _ = await start_bot(fake, env, workdir, args.startup_timeout)
            processes.append(process)
            await asyncio.sleep(args.push_after)  # the start-up warm-up pass is over: a bot in its stride
            updates = [fake.photo_update(photo, user_id=first_user + i) for i, photo in enumerate(photos)]
            wanted = {message_key(u) for u in updates}
            mark = fake.mark()
            pushed = time.monotonic()
            for update in updates:
                await fake.push(update)
            try:
                await wait_for_trigger(fake, updates, args.kill_on, mark, args.trigger_timeout)
                # From when the server answered that call (a Call's ``at`` is when a long poll arrived, maybe
                # before the photos were pushed); the fake notifies waiters as it records, within a millisecond.
                result.trigger_at = time.monotonic() - pushed
                await asyncio.sleep(delay)
            except AssertionError:
                result.note = f"no trigger ({args.kill_on}) within {args.trigger_timeout:.0f} s: killed then; "
            await kill_bot(process)
            result.kill_at = time.monotonic() - pushed
            await asyncio.sleep(0.2)  # requests the bot had sent in full are recorded by now
            restart = fake.mark()
            before = answers_by_photo(fake, wanted, mark, restart)

            process, result.startup = await start_bot(fake, env, workdir, args.startup_timeout)
            processes.append(process)
            deadline = time.monotonic() + args.wait
            last_count, quiet_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                everything = answers_by_photo(fake, wanted, mark)
                count = sum(len(calls) for calls in everything.values())
                if count != last_count:
                    last_count, quiet_since = count, time.monotonic()
                if all(everything.values()) and time.monotonic() - quiet_since >= args.settle:
                    break
                await asyncio.sleep(SETTLE_STEP_S)
            else:
                result.note += f"stopped waiting {args.wait:.0f} s after the restart"
            everything = answers_by_photo(fake, wanted, mark)
            result.before = sum(1 for key in wanted if before[key])
            result.after = sum(1 for key in wanted if not before[key] and everything[key])
            result.lost = sum(1 for key in wanted if not everything[key])
            result.duplicates = sum(1 for key in wanted if len(everything[key]) > 1)
            result.busy = sum(1 for calls in everything.values() for c in calls if is_busy(c.text))
            ids = {u["update_id"] for u in updates}
            result.redelivered = len({u["update_id"] for c in fake.find_calls("getUpdates", after=restart)
                                      for u in c.result or [] if u["update_id"] in ids})
        finally:
            for process in processes:
                took, code = await stop_bot(process)
                if code not in (0, None, -9):  # -9: the one we killed
                    print(f"  a bot exited with status {code}:\n" + tail(workdir / "bot.log"))
            keep_log(workdir, args.keep_log)
            await fake.stop()
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12, help="K: photos in flight at the kill (default %(default)s)")
    parser.add_argument("--kill-after", default="0.3,1.5",
                        help="seconds from the trigger to the SIGKILL, comma-separated (default %(default)s)")
    parser.add_argument("--kill-on", choices=("updates", "downloads"), default="updates",
                        help="the trigger: the getUpdates that returned the photos, or the Kth photo downloaded")
    parser.add_argument("--repeats", type=int, default=3, help="trials per kill delay (default %(default)s)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds after the restart to wait for answers at most")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds without a new answer, once every photo has one, before counting (duplicates come late)")
    parser.add_argument("--push-after", type=float, default=3.0,
                        help="seconds from the bot's first getUpdates to sending the photos (default %(default)s: "
                             "after its start-up warm-up pass)")
    parser.add_argument("--trigger-timeout", type=float, default=60.0, help="seconds to wait for the trigger at most")
    add_common_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    print_machine()
    delays = [float(d) for d in args.kill_after.split(",") if d.strip()]
    name, photo = default_photo(args.photo)
    with tempfile.TemporaryDirectory(prefix="bench-crash-ckpt-") as tmp:
        checkpoint = args.checkpoint or make_random_checkpoint(Path(tmp))
        probe = FakeTelegram()  # only for printing the settings the bot gets (its URLs change per trial)
        print(f"photo: {name}; K={args.photos} photos, one per user; SIGKILL {delays} s after the "
              f"{'getUpdates that returned them' if args.kill_on == 'updates' else 'Kth download'}; "
              f"{args.repeats} trials each; bot settings: "
              f"{shown_settings(bot_environment(probe, checkpoint, Path('DATA_DIR'), dict(args.env)))}")
        print(f"{'kill after s':>12} | {'trial':>5} | {'trigger s':>9} | {'killed at s':>11} | {'before':>6} | "
              f"{'after':>5} | {'lost':>4} | {'dupl.':>5} | {'busy':>4} | {'redelivered':>11} | {'restart s':>9} | note")
        trials, user = [], FIRST_USER_ID
        for number in range(args.repeats):  # round after round, so drift hits every delay alike
            for delay in delays:
                photos = distinct_photos(photo, args.photos, start=user)
                t = await trial(args, delay, checkpoint, photos, user)
                user += args.photos
                trials.append(t)
                print(f"{delay:>12.2f} | {number + 1:>5} | {t.trigger_at:>9.2f} | {t.kill_at:>11.2f} | {t.before:>6} | "
                      f"{t.after:>5} | {t.lost:>4} | {t.duplicates:>5} | {t.busy:>4} | {t.redelivered:>11} | {t.startup:>9.1f} | {t.note}")
    print(f"\nmedian (range) over the trials, of K={args.photos} photos each:")
    for delay in delays:
        mine = [t for t in trials if t.delay == delay]
        print(f"  kill {delay:.2f} s after the trigger: answered before the kill {median_range([t.before for t in mine], '.0f')}, "
              f"after the restart {median_range([t.after for t in mine], '.0f')}, "
              f"lost {median_range([t.lost for t in mine], '.0f')}, duplicates {median_range([t.duplicates for t in mine], '.0f')}, "
              f"delivered again {median_range([t.redelivered for t in mine], '.0f')}")
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
