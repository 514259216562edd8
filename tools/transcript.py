"""Run one real session of the bot against the fake Bot API server and print it as a transcript.

    python tools/transcript.py --heat-map why.png [--checkpoint checkpoints/model.pt] [--photo FILE] \
        [--set WHY_PATCH=32 --set WHY_STRIDE=16] [--language hi]

The user says /start and /help, sends a photo, asks /why, sends a PDF and some text; every answer the bot
gives is printed ("user →" / "bot ←" lines) and the last heat map it sent is saved to ``--heat-map``.
``--language`` is the user's Telegram language_code (the bot answers in it when it has that language).
The photo is ``--photo``, else one of the sample photos that ``make sample`` (or ``make run``) fetched into
images/sample/, else a generated one. Without a checkpoint file a random-init one is made in a temporary
folder (the answers are then meaningless, but the session is real). Everything runs on 127.0.0.1; the fake
Telegram server is devtools/fake_telegram.py.
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
from devtools.samples import PDF, jpeg  # noqa: E402

SAMPLE_DIR = ROOT / "images" / "sample"  # where `make sample` puts the photos: <train|test>/<class>/<name>
PREFERRED_SAMPLE = Path("test") / "saree" / "saree1.jpeg"  # the photo of the README's example
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
USER_ID = 1001  # the fake's default user
SHOWN = ("sendMessage", "sendPhoto", "editMessageMedia", "editMessageText", "editMessageCaption",
         "sendChatAction", "answerCallbackQuery")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heat-map", type=Path, required=True, help="where to save the heat map the bot sent (PNG)")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "model.pt")
    parser.add_argument("--photo", type=Path, help="the photo the user sends (default: a sample photo from "
                        f"{SAMPLE_DIR.relative_to(ROOT)}/, else a generated one)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=setting,
                        help="a bot setting (env name)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the finer heat map")
    parser.add_argument("--language", default="en", metavar="CODE",
                        help="the user's Telegram language_code, e.g. hi or es (default: %(default)s)")
    return parser.parse_args(argv)


def setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def sample_photo(sample_dir: Path = SAMPLE_DIR) -> Path | None:
    """A photo fetched into ``sample_dir``: the README's saree if it is there, else the first one (test split
    first, in name order); None when there is none."""
    preferred = sample_dir / PREFERRED_SAMPLE
    if preferred.is_file():
        return preferred
    if not sample_dir.is_dir():
        return None
    photos = sorted((p for p in sample_dir.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()),
                    key=lambda p: (p.relative_to(sample_dir).parts[0] != "test", str(p)))
    return photos[0] if photos else None


def the_photo(args: argparse.Namespace) -> tuple[str, bytes]:
    """(name, bytes) of the photo the user sends; a line is printed when it has to be a generated one."""
    if args.photo is not None:
        return args.photo.name, args.photo.read_bytes()
    found = sample_photo()
    if found is not None:
        return found.name, found.read_bytes()
    print(f"(no photos in {SAMPLE_DIR.relative_to(ROOT)}/: sending a generated picture instead; "
          "`make sample` fetches the real ones)")
    return "generated.jpeg", jpeg(seed=1, width=640, height=480)


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


def bot_settings(fake, args: argparse.Namespace, checkpoint: Path, data_dir: Path):
    from bot.config import Settings

    extra = dict(args.set)
    env = settings_env(fake, checkpoint, data_dir, **extra)
    # The bot's own defaults (heat maps, warm-up, forward pass) unless --set says otherwise: settings_env
    # sets the tests' quicker values for these.
    for name in ("WHY_COARSE_PATCH", "WHY_COARSE_STRIDE", "WHY_PATCH", "WHY_STRIDE", "WARM_UP_BATCH", "FROZEN_GRAPH"):
        if name not in extra:
            env.pop(name, None)
    return Settings.from_env(environ=env, env_file=None)


async def session(args: argparse.Namespace, settings, classifier, photo: tuple[str, bytes],
                  fake: FakeTelegram) -> tuple[list[str], bytes | None]:
    from bot.app import build_application

    app = build_application(settings, classifier)
    fake.set_language(USER_ID, args.language)
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
        name, data = photo
        await user(f"[photo {name}, {len(data) // 1024} kB]", fake.photo_update(data), a_message)

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
    if args.photo is not None and not args.photo.is_file():
        print(f"error: no photo at {args.photo}", file=sys.stderr)
        return 2
    from bot.config import ConfigError
    from model import CheckpointError, load_classifier

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if not checkpoint.is_file():
            print(f"(no checkpoint at {checkpoint}: using a random-init one, so the answers mean nothing; "
                  "`make train` builds a real one)")
            checkpoint = random_checkpoint(Path(scratch))
        loading = time.monotonic()
        try:
            classifier = load_classifier(checkpoint)
        except CheckpointError as error:
            print(f"error: cannot load {checkpoint}: {error} (retrain with `make train`)", file=sys.stderr)
            return 2
        print(f"(model loaded from {checkpoint} in {time.monotonic() - loading:.1f} s)")
        photo = the_photo(args)
        try:
            Image.open(io.BytesIO(photo[1])).verify()
        except Exception:  # PIL raises several kinds for bytes that are not a picture
            print(f"error: {photo[0]} is not a picture (PIL cannot read it)", file=sys.stderr)
            return 2

        async def run() -> tuple[list[str], bytes | None]:
            fake = await FakeTelegram().start()
            try:
                settings = bot_settings(fake, args, checkpoint, Path(scratch) / "data")
                return await session(args, settings, classifier, photo, fake)
            finally:
                await fake.stop()

        try:
            lines, heat_map = asyncio.run(run())
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
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
