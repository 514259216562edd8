"""What the benches that drive the real bot process share (bench_serving, bench_why_load, bench_first_burst,
bench_crash): the machine's description, the bot's environment, starting it (``python -m bot`` in its own
process, against devtools' fake Telegram on 127.0.0.1) and stopping it, the photos users send, and
medians with ranges.

Not a bench itself (``make bench`` runs ``bench/bench_*.py``); import it after putting bench/ on sys.path.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_model import SEED_PHOTO, make_random_checkpoint  # noqa: E402,F401  (make_random_checkpoint: for the benches)

from devtools.samples import jpeg  # noqa: E402

SAMPLE_DIR = REPO / "images" / "sample"  # what `make sample` fetched: <train|test>/<class>/<name>
ADMIN_ID = 42
FIRST_USER_ID = 500_000
CLEAN_ENV = ("PATH", "HOME", "LANG", "TMPDIR")  # all the bot gets from this shell


# ---- the machine ---------------------------------------------------------------------------------
def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and flags, from ``lscpu`` (or /proc/cpuinfo where lscpu is missing)."""
    fields: dict[str, str] = {}
    if shutil.which("lscpu"):
        output = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
        for line in output.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    if "model name" not in fields or "flags" not in fields:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
        except OSError:
            pass
    return fields.get("model name", "unknown CPU"), fields.get("flags", "").split()


def print_machine() -> None:
    """Two lines at the top of every bench: the CPU model with the cores this process may use, and its flags."""
    model, flags = cpu_model_and_flags()
    simd = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16")]
    print(f"CPU: {model}; {len(os.sched_getaffinity(0))} cores for this process of {os.cpu_count()}; "
          f"vector units: {' '.join(simd) or 'none of avx2/avx512/amx'}")
    print(f"CPU flags (lscpu): {' '.join(flags) or 'unknown'}")


# ---- settings --------------------------------------------------------------------------------------
def setting(text: str) -> tuple[str, str]:
    """argparse type of ``--env NAME=VALUE``."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=[], type=setting, metavar="NAME=VALUE",
                        help="a bot setting for this run (repeatable), e.g. --env WHY_PATCH=32")
    parser.add_argument("--checkpoint", type=Path, help="serve this checkpoint instead of a random-init one")
    parser.add_argument("--photo", type=Path, help="the photo users send (default: the seed saree in ../shared, "
                        "else a sample photo from images/sample, else a generated picture)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the bot to start polling")
    parser.add_argument("--keep-log", type=Path, metavar="PATH", help="copy the bot's log here at the end")


def bot_environment(fake, checkpoint: Path, data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: only what a server would set, so no setting leaks in from this shell.
    Everything else is the bot's own default unless ``extra`` says otherwise."""
    env = {name: os.environ[name] for name in CLEAN_ENV if name in os.environ}
    env.update({
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.api_base_url,
        "TELEGRAM_FILE_BASE_URL": fake.file_base_url,
        "CHECKPOINT_PATH": str(checkpoint),
        "DATA_DIR": str(data_dir),
        "ADMIN_USER_IDS": str(ADMIN_ID),
        "LOG_LEVEL": "WARNING",  # one INFO line per request would be part of what is measured; keep it quiet
    })
    env.update(extra)
    return env


def shown_settings(env: dict[str, str]) -> dict[str, str]:
    """The environment minus the shell's variables and the token: what to print at the top."""
    return {k: v for k, v in env.items() if k not in CLEAN_ENV and k != "TELEGRAM_BOT_TOKEN"}


# ---- the bot process --------------------------------------------------------------------------------
async def start_bot(fake, env: dict[str, str], workdir: Path, timeout: float, log: str = "bot.log"):
    """Launch ``python -m bot``; returns (process, seconds from the launch to its first getUpdates arriving).

    The bot's output goes to ``workdir/log`` (appended: a restarted bot adds to it). If the bot exits
    or does not poll within ``timeout`` it is stopped and SystemExit carries the end of its log.
    """
    polls = len(fake.polls)
    launched = time.monotonic()
    with open(workdir / log, "ab") as output:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=workdir, env=env,
                                                       stdout=output, stderr=asyncio.subprocess.STDOUT)
    waiter = asyncio.ensure_future(fake.wait_for_poll(polls, timeout=timeout))
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        raise SystemExit(f"the bot exited with status {process.returncode} before polling:\n" + tail(workdir / log))
    exited.cancel()
    if waiter.exception() is not None:
        await kill_bot(process)
        raise SystemExit(f"the bot did not poll within {timeout:.0f} s:\n" + tail(workdir / log))
    return process, waiter.result() - launched


async def stop_bot(process, timeout: float = 20) -> tuple[float, int | None]:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns (seconds it took, exit status)."""
    started = time.monotonic()
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
    return time.monotonic() - started, process.returncode


async def kill_bot(process) -> None:
    """SIGKILL: the bot gets no chance to finish anything (a power cut, the OOM killer)."""
    if process.returncode is None:
        process.kill()
    await process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def keep_log(workdir: Path, target: Path | None, log: str = "bot.log") -> None:
    if target is not None and (workdir / log).is_file():
        shutil.copyfile(workdir / log, target)
        print(f"the bot's log: {target}")


# ---- what users send ---------------------------------------------------------------------------------
def default_photo(path: Path | None = None) -> tuple[str, bytes]:
    """(name, bytes): ``path``, else the seed saree (what bench_serving and bench_model use), else a photo
    that `make sample` fetched, else a generated 640x480 picture."""
    if path is not None:
        if not path.is_file():
            raise SystemExit(f"photo {path} not found")
        return path.name, path.read_bytes()
    if SEED_PHOTO.is_file():
        return SEED_PHOTO.name, SEED_PHOTO.read_bytes()
    samples = sorted(p for p in SAMPLE_DIR.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()) \
        if SAMPLE_DIR.is_dir() else []
    if samples:
        return samples[0].name, samples[0].read_bytes()
    return "generated 640x480", jpeg(seed=1, width=640, height=480)


def distinct_photos(base: bytes, count: int, start: int = 0) -> list[bytes]:
    """``count`` JPEGs of the same photo, each with a small square of its own colour in the top-left corner,
    so nothing keyed by content (the heat-map cache) can answer one from another, not even from Telegram's
    smaller copies of them (a one-pixel change vanishes in those); same size and cost to classify or explain."""
    from PIL import Image

    picture = Image.open(io.BytesIO(base)).convert("RGB")
    side = max(8, min(picture.size) // 12)
    out = []
    for number in range(start, start + count):
        variant = picture.copy()
        colour = ((37 * number) % 256, (91 * number + 60) % 256, (151 * number + 120) % 256)
        variant.paste(colour, (0, 0, side, side))
        buffer = io.BytesIO()
        variant.save(buffer, "JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def is_busy(text: str) -> bool:
    return "busy" in text.lower()


def replies_to(wanted: set[tuple[int, int]]):
    """A predicate for calls: a sendMessage that replies to one of the (chat id, message id) in ``wanted``."""
    return lambda call: call.method == "sendMessage" and (call.chat_id, call.reply_to) in wanted


def message_key(update: dict) -> tuple[int, int]:
    return update["message"]["chat"]["id"], update["message"]["message_id"]


# ---- numbers ---------------------------------------------------------------------------------------
def percentile(values, q: float) -> float:
    """The nearest-rank ``q`` quantile (0.5: the median of an odd count), NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def median_range(values, fmt: str = ".2f", unit: str = "") -> str:
    """"1.23 (1.10-1.40)": the median and, from more than one value, the range."""
    values = [v for v in values if v == v]  # NaN: nothing measured
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:{fmt}}{unit}"
    return f"{median:{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}})"
