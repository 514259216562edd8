"""Scrape the real bot's /metrics during bursts of photos, /why and feedback, and draw the dashboard's panels.

    python bench/scrape_dashboard.py [--waves 5] [--users 12] [--every 1.0] [--out DIR] [--png docs/images/operations-dashboard.png]

Runs ``python -m bot`` (its own process, random-init checkpoints: a main one and a canary for half the
chats) against devtools' fake Telegram Bot API on 127.0.0.1, with METRICS_PORT and FEEDBACK_DIR set and a
small QUEUE_SIZE so that bursts get some "busy" answers. Each wave: ``--users`` new users send a photo in
the same instant, two of them ask /why, and every user who got an answer judges it (a fixed "true" class
per user, so about a third of a random model's answers are right). Meanwhile /metrics is scraped every
``--every`` seconds; each scrape is kept (``DIR/scrapes.jsonl``), and the panels of deploy/grafana-dashboard.json
are computed from them the way Prometheus would (rates and histogram_quantile over a sliding window)
and drawn with matplotlib. Every wait is bounded and the bot is always stopped.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from harness import bot_environment, default_photo, distinct_photos, print_machine, start_bot, stop_bot, tail  # noqa: E402

from devtools.fake_telegram import FakeTelegram  # noqa: E402

FIRST_USER = 700_000
WINDOW_S = 10.0  # the rate()/histogram_quantile() window of the panels


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Two random-init checkpoints with the same classes (different seeds): the main model and the canary."""
    import torch
    from bench_model import CLASS_NAMES

    from model import build_network, save_checkpoint

    paths = []
    for seed, name in ((0, "main.pt"), (1, "canary.pt")):
        torch.manual_seed(seed)
        network = build_network(len(CLASS_NAMES), "none").eval()
        paths.append(save_checkpoint(folder / name, network, CLASS_NAMES, training={"weights": "none", "bench": True}))
    return paths[0], paths[1]


def scrape(port: int) -> list[tuple[str, dict, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    keep = ("productbot_", "process_resident_memory_bytes", "process_cpu_seconds")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith(keep) and not s.name.endswith("_created")]


async def scraper(port: int, every: float, out: list, stop: asyncio.Event, started: float) -> None:
    while not stop.is_set():
        try:
            samples = await asyncio.to_thread(scrape, port)
            out.append({"t": time.monotonic() - started, "samples": samples})
        except OSError as error:
            print(f"scrape failed: {error}")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


def keyboard(call) -> list[str]:
    markup = call.params.get("reply_markup") or {}
    return [b.get("callback_data", "") for row in markup.get("inline_keyboard", []) for b in row]


async def wave(fake, number: int, users: int, photos: list[bytes], class_count: int) -> dict:
    """One burst: photos in one instant, two /why, then everyone answered judges their answer."""
    first = FIRST_USER + number * users
    updates = [await fake.push(fake.photo_update(photos[i], user_id=first + i)) for i in range(users)]
    answers = []
    for update in updates:
        try:
            answers.append(await fake.wait_for_answer(update["message"], timeout=60))
        except (TimeoutError, AssertionError):
            answers.append(None)
    answered = [(update, call) for update, call in zip(updates, answers) if call is not None and "%" in call.text]
    busy = sum(1 for call in answers if call is not None and "busy" in call.text.lower())
    for update, _ in answered[:2]:
        await fake.push(fake.command_update("/why", user_id=update["message"]["from"]["id"]))
    judged = 0
    for update, call in answered:
        key = next((data.split(":")[1] for data in keyboard(call) if data.startswith("fb:")), None)
        if key is None:
            continue
        truth = update["message"]["from"]["id"] % class_count  # this user's photos are of this class
        message = fake.messages[(call.chat_id, call.result["message_id"])]
        await fake.push(fake.callback_update(f"fb:{key}:{truth}", message))
        judged += 1
    return {"wave": number, "photos": users, "answered": len(answered), "busy": busy, "why": min(2, len(answered)),
            "judged": judged}


async def run(args) -> list[dict]:
    from bench_model import CLASS_NAMES

    fake = await FakeTelegram().start()
    workdir = Path(tempfile.mkdtemp(prefix="scrape-dashboard-"))
    main_checkpoint, canary = make_checkpoints(workdir)
    port = free_port()
    env = bot_environment(fake, main_checkpoint, workdir / "data", {
        "METRICS_PORT": str(port), "FEEDBACK_DIR": str(workdir / "feedback"), "CANARY_CHECKPOINT": str(canary),
        "CANARY_SHARE": "0.5", "QUEUE_SIZE": str(args.queue_size), "WHY_PATCH": "32", "WHY_STRIDE": "16",
        "LOG_LEVEL": "WARNING"})
    _, base = default_photo()
    photos = distinct_photos(base, args.waves * args.users)
    scrapes: list[dict] = []
    stop = asyncio.Event()
    process, startup = await start_bot(fake, env, workdir, timeout=240)
    print(f"bot polling after {startup:.1f} s; /metrics on 127.0.0.1:{port}")
    started = time.monotonic()
    scraping = asyncio.create_task(scraper(port, args.every, scrapes, stop, started))
    try:
        await asyncio.sleep(5)  # a quiet start on the panels
        for number in range(args.waves):
            summary = await wave(fake, number, args.users, photos[number * args.users:(number + 1) * args.users],
                                 len(CLASS_NAMES))
            print(f"t={time.monotonic() - started:5.1f} s  wave {summary}")
            await asyncio.sleep(args.pause)
        await asyncio.sleep(20)  # the last maps, the slow gauges (live accuracy every 15 s)
    finally:
        stop.set()
        await scraping
        seconds, status = await stop_bot(process)
        print(f"bot stopped in {seconds:.1f} s (status {status})")
        if status not in (0, None):
            print(tail(workdir / "bot.log"))
        await fake.stop()
    (args.out / "scrapes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scrapes))
    print(f"{len(scrapes)} scrapes in {args.out / 'scrapes.jsonl'}")
    return scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=5)
    parser.add_argument("--users", type=int, default=12, help="photos per burst (one per user)")
    parser.add_argument("--pause", type=float, default=12.0, help="seconds between waves")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--out", type=Path, default=None, help="folder for scrapes.jsonl (default: a temp folder)")
    parser.add_argument("--png", type=Path, default=BENCH.parent / "docs" / "images" / "operations-dashboard.png")
    parser.add_argument("--from-scrapes", type=Path, help="draw from a scrapes.jsonl of an earlier run")
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix="scrapes-"))
    args.out.mkdir(parents=True, exist_ok=True)
    print_machine()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.from_scrapes:
        scrapes = [json.loads(line) for line in args.from_scrapes.read_text().splitlines()]
    else:
        scrapes = asyncio.run(run(args))
    from dashboard_panels import draw

    draw(scrapes, args.png, WINDOW_S)
    print(f"panels: {args.png}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
