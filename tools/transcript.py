"""Run one real session of the bot against the fake Bot API server and print it as a transcript.

    python tools/transcript.py --heat-map why.png [--checkpoint checkpoints/model.pt] [--photo FILE] \
        [--set WHY_PATCH=32 --set WHY_STRIDE=16]

The user says /start and /help, sends a photo, asks /why, sends a PDF and some text; every answer the bot
gives is printed ("user →" / "bot ←" lines) and the last heat map it sent is saved to ``--heat-map``.
Without a checkpoint file a random-init one is made in a temporary folder (the answers are then
meaningless, but the session is real). Everything runs on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: this checkout's packages come first

from PIL import Image  # noqa: E402

from devtools.bot_env import settings_env  # noqa: E402
from devtools.fake_telegram import Call, FakeTelegram  # noqa: E402
from devtools.samples import PDF  # noqa: E402

SEED_PHOTO = ROOT.parent / "shared" / "datasets" / "seed" / "test" / "saree" / "saree1.jpeg"
SHOWN = ("sendMessage", "sendPhoto", "editMessageMedia", "editMessageText", "editMessageCaption",
         "sendChatAction", "answerCallbackQuery")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heat-map", type=Path, required=True, help="where to save the heat map the bot sent (PNG)")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "model.pt")
    parser.add_argument("--photo", type=Path, default=SEED_PHOTO, help="the photo the user sends")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a bot setting (env name)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the finer heat map")
    return parser.parse_args(argv)


def random_checkpoint(folder: Path) -> Path:
    import torch

    from model import build_network, save_checkpoint

    torch.manual_seed(0)
    path = folder / "random-init.pt"
    save_checkpoint(path, build_network(3, "none").eval(), ["kurti", "saree", "shirt"], training={"weights": "none"})
    return path


def describe(call: Call, started: float) -> str:
    when = f"[{call.at - started:6.2f} s]"
    if call.method == "sendChatAction":
        return f"{when} bot ← (chat shows: {call.params.get('action')})"
    if call.method == "answerCallbackQuery":
        return f"{when} bot ← (button press acknowledged{': ' + call.text if call.text else ''})"
    picture = call.photo_bytes
    shown = ""
    if picture:
        image = Image.open(io.BytesIO(picture))
        shown = f"[{'photo' if call.method == 'sendPhoto' else 'replaces the photo with'} {image.width}x{image.height} {image.format}] "
    buttons = [b["text"] for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
    keyboard = f"  [buttons: {' | '.join(buttons)}]" if buttons else ""
    reply = " (reply)" if call.reply_to else ""
    text = call.text.replace("\n", "\n" + " " * 18)
    return f"{when} bot ←{reply} {shown}{text}{keyboard}"


async def session(args: argparse.Namespace, checkpoint: Path, data_dir: Path) -> tuple[list[str], bytes | None]:
    from bot.app import build_application
    from bot.config import Settings

    fake = await FakeTelegram().start()
    extra = dict(item.split("=", 1) for item in args.set)
    env = settings_env(fake, checkpoint, data_dir, **extra)
    for name in ("WHY_COARSE_PATCH", "WHY_COARSE_STRIDE", "WHY_PATCH", "WHY_STRIDE"):
        if name not in extra:
            env.pop(name)  # the bot's own heat-map defaults unless --set says otherwise
    app = build_application(Settings.from_env(environ=env, env_file=None))
    lines: list[str] = []
    started = time.monotonic()
    try:
        await app.initialize()
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        lines.append(f"(bot started in {time.monotonic() - started:.1f} s; commands registered: "
                     f"{', '.join('/' + c['command'] for c in fake.commands)})")

        async def user(label: str, update: dict, wait_for) -> None:
            mark = fake.mark()
            lines.append(f"[{time.monotonic() - started:6.2f} s] user → {label}")
            await fake.push(update)
            await wait_for(mark)
            repeats = 0  # Telegram shows a chat action for 5 s, so the bot renews it: one line per run of them
            for call in (c for c in fake.calls[mark:] if c.method in SHOWN and c.ok):
                if call.method == "sendChatAction" and lines[-1].endswith(f"(chat shows: {call.params['action']})"):
                    repeats += 1
                    continue
                if repeats:
                    lines[-1] += f" (renewed {repeats}x while it works)"
                    repeats = 0
                lines.append(describe(call, started))
            if repeats:
                lines[-1] += f" (renewed {repeats}x while it works)"

        def a_message(mark):
            return fake.wait_for_call("sendMessage", after=mark, timeout=60)

        await user("/start", fake.command_update("/start"), a_message)
        await user("/help", fake.command_update("/help"), a_message)
        photo = args.photo.read_bytes()
        await user(f"[photo {args.photo.name}, {len(photo) // 1024} kB]", fake.photo_update(photo), a_message)

        async def heat_maps(mark):
            await fake.wait_for_call("sendPhoto", after=mark, timeout=args.timeout)
            try:
                await fake.wait_for_call("editMessageMedia", after=mark, timeout=args.timeout)
            except AssertionError:
                lines.append("(no finer map came within the timeout)")

        await user("/why", fake.command_update("/why"), heat_maps)
        await user("[file catalogue.pdf, application/pdf]",
                   fake.document_update(PDF, file_name="catalogue.pdf", mime_type="application/pdf"), a_message)
        await user("hello, is this a saree?", fake.text_update("hello, is this a saree?"), a_message)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await fake.stop()
    maps = [c.photo_bytes for c in fake.calls if c.method in ("sendPhoto", "editMessageMedia") and c.ok]
    return lines, (maps[-1] if maps else None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    operator_log = io.StringIO()
    handler = logging.StreamHandler(operator_log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("bot").addHandler(handler)
    logging.getLogger("bot").setLevel(logging.INFO)
    logging.getLogger("bot").propagate = False  # printed once, after the transcript
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if not checkpoint.is_file():
            print(f"(no checkpoint at {checkpoint}: using a random-init one, so the answers mean nothing)")
            checkpoint = random_checkpoint(Path(scratch))
        lines, heat_map = asyncio.run(session(args, checkpoint, Path(scratch) / "data"))
    print("\n".join(lines))
    print("\noperator log (logger 'bot'):\n" + operator_log.getvalue().rstrip())
    if heat_map is None:
        print("the bot sent no heat map", file=sys.stderr)
        return 1
    args.heat_map.parent.mkdir(parents=True, exist_ok=True)
    args.heat_map.write_bytes(heat_map)
    print(f"\nheat map saved to {args.heat_map}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
