"""What four small hostile files cost the real bot: its peak RSS (VmHWM) after a normal burst of photos,
then after the four "bombs" of issue 25 sent at once from four chats (a 16-bit grey PNG 7000², a 48-bit RGB
PNG 4000², an 8-bit RGB PNG 7000², a JPEG 7000²; 100-750 kB each), the difference, each answer, and
whether the bot is still alive and answering.

``python -m bot`` runs in its own process against devtools' fake Telegram on 127.0.0.1, with the code under
``--code-root`` (default: this checkout; give a checkout of an older commit for a before/after from the
same script). Each file's own decode is also measured in a fresh process of that code (VmHWM of one
decode, as the bot decodes it). Aim (issue 25): the bombs add at most 300 MB to the burst's peak.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    FIRST_USER_ID,
    REPO,
    bot_environment,
    default_photo,
    distinct_photos,
    is_busy,
    make_random_checkpoint,
    print_machine,
    shown_settings,
    start_bot,
    stop_bot,
    tail,
)

from devtools import bombs  # noqa: E402
from devtools.fake_telegram import FakeTelegram  # noqa: E402

AIM_MB = 300


def vm(pid: int, field: str) -> float:
    """A /proc/PID/status memory field in MB."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(field + ":"))


async def send_and_wait(fake, updates: list[dict], timeout: float) -> dict[int, str]:
    """Push every update at once; the text (or "[photo]") of each one's first answer, by chat id."""
    mark = fake.mark()
    for update in updates:
        await fake.push(update)
    wanted = {(u["message"]["chat"]["id"], u["message"]["message_id"]) for u in updates}
    calls = await fake.wait_for_calls(None, len(updates), lambda c: c.method in ("sendMessage", "sendPhoto")
                                      and (c.chat_id, c.reply_to) in wanted, after=mark, timeout=timeout)
    return {call.chat_id: (call.text if call.method == "sendMessage" else "[photo]") for call in calls}


async def run(args: argparse.Namespace) -> int:
    code_root = args.code_root.resolve()
    files = bombs.four_bombs()
    print_machine()
    print(f"load (uptime): {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"bot code: {code_root}")
    print("one decode of each file, as the bot decodes it, in a fresh process (VmHWM over its RSS before):")
    for name, data in files.items():
        measured = bombs.decode_peak(data, code_root)
        print(f"  {name:18s} {len(data) / 1000:6.0f} kB  {measured['peak_bytes'] / 2**20:7.1f} MiB  {measured['outcome'][:100]}")
    with tempfile.TemporaryDirectory(prefix="bench-bombs-") as tmp:
        workdir = Path(tmp)
        checkpoint = make_random_checkpoint(workdir)
        fake = await FakeTelegram().start()
        process = None
        try:
            env = bot_environment(fake, checkpoint, workdir / "data", dict(args.env))
            env["PYTHONPATH"] = str(code_root)
            print(f"bot settings from the bench: {shown_settings(env)}")
            process, startup = await start_bot(fake, env, workdir, args.startup_timeout)
            print(f"start-up: {startup:.1f} s; idle VmRSS {vm(process.pid, 'VmRSS'):.0f} MB")
            _, photo = default_photo(args.photo)
            burst = [fake.photo_update(p, user_id=FIRST_USER_ID + i) for i, p in enumerate(distinct_photos(photo, args.users))]
            answers = await send_and_wait(fake, burst, args.timeout)
            busy = sum(is_busy(text) for text in answers.values())
            burst_peak = vm(process.pid, "VmHWM")
            print(f"normal burst: {args.users} photos from {args.users} chats, {len(answers)} answered ({busy} busy); "
                  f"VmHWM {burst_peak:.0f} MB")
            first_chat = FIRST_USER_ID + 10_000
            updates = [fake.document_update(data, file_name=f"{name}.{'jpg' if 'jpeg' in name else 'png'}",
                                            mime_type="image/jpeg" if "jpeg" in name else "image/png",
                                            user_id=first_chat + n, chat_id=first_chat + n)
                       for n, (name, data) in enumerate(files.items())]
            try:
                bomb_answers = await send_and_wait(fake, updates, args.timeout)
            except TimeoutError:
                bomb_answers = {}
            alive = process.returncode is None
            bombs_peak = vm(process.pid, "VmHWM") if alive else float("nan")
            print(f"four bombs at once from four chats: VmHWM {bombs_peak:.0f} MB; +{bombs_peak - burst_peak:.0f} MB over "
                  f"the burst's peak (aim: at most +{AIM_MB} MB)")
            for n, name in enumerate(files):
                print(f"  {name:18s} -> {bomb_answers.get(first_chat + n, '(no answer)')[:150]!r}")
            if alive:
                check = fake.photo_update(jpeg_after(photo), user_id=first_chat + 100, chat_id=first_chat + 100)
                after = await send_and_wait(fake, [check], args.timeout)
                alive = process.returncode is None and bool(after)
            print(f"bot alive and answering afterwards: {'yes' if alive else 'NO'}"
                  + ("" if alive else f" (exit status {process.returncode})\n" + tail(workdir / "bot.log")))
        finally:
            if process is not None:
                took, code = await stop_bot(process)
                print(f"SIGTERM -> exit status {code} in {took:.1f} s")
            await fake.stop()
    return 0


def jpeg_after(photo: bytes) -> bytes:
    return distinct_photos(photo, 1, start=999)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-root", type=Path, default=REPO, help="the checkout whose bot runs (default: this one)")
    parser.add_argument("--users", type=int, default=30, help="photos in the normal burst (one per chat)")
    parser.add_argument("--photo", type=Path, help="the burst's photo (default: as bench_serving)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda text: tuple(text.split("=", 1)), help="a bot setting for this run")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a round's answers")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
