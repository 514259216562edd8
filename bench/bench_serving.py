"""The bot under a burst: N users each send one photo at the same moment; how fast are they all answered?

    python bench/bench_serving.py [--users 1,8,30,100] [--repeats 3] [--env QUEUE_SIZE=128 ...]

Runs the real bot (``python -m bot``, its own process, random-init checkpoint) against the project's
fake Telegram Bot API server on 127.0.0.1 (devtools/fake_telegram.py), and reports:

- start-up time: from launching the process to its first ``getUpdates`` (torch import + model load);
- per burst of N (every N once per round, ``--repeats`` rounds, then the median per N): time from pushing the N
  updates to each ``sendMessage`` answer (p50, p95, max),
  photos per second (answered photos / time to the last answer), busy refusals, the bot's peak RSS
  (VmHWM from /proc, so the true peak, not a sample);
- the bare model (bench_model.py) at batch 1 and its best batch, measured in this same run, before the
  bursts, between rounds and after, and the efficiency: serving photos/s / the bare model's best photos/s
  around the same round;
- where the bot's resident memory goes (/proc/PID/smaps by mapping), and how long SIGTERM takes.

Every wait is bounded and the script stops the bot itself; only 127.0.0.1 is ever contacted.
Numbers, not pass/fail. Each user sends the seed saree photo with Telegram's several PhotoSizes
(90/320/800 px and the original), so the bot's choice of size and its JPEG draft decoding are exercised.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from bench_model import SEED_PHOTO, best, format_table, make_random_checkpoint, measure_batches, seed_photo_path  # noqa: E402
from harness import (  # noqa: E402
    ADMIN_ID,
    FIRST_USER_ID,
    bot_environment,
    is_busy,
    print_machine,
    shown_settings,
    start_bot,
    stop_bot,
    tail,
)

from bot.config import Settings  # noqa: E402
from devtools.fake_telegram import FakeTelegram  # noqa: E402
from model import load_classifier  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from model.threads import available_cores, configure_torch_threads  # noqa: E402


@dataclass
class Burst:
    users: int
    latencies: list[float]  # seconds from the push to each classification answer
    busy: int
    other: list[str]
    peak_rss_mb: float
    rss_after_mb: float
    cpu_seconds: float  # the bot process's CPU time (all threads) during the burst
    fake_cpu_seconds: float  # this process's CPU time meanwhile: the fake Telegram server's share of the cores
    thread_cpu_seconds: dict[str, float]  # the bot's CPU time during the burst per thread name (cpu_by_thread)
    page_faults: int  # the bot's minor page faults during the burst
    bare_pps: float = float("nan")  # the bare model's photos/s at its best batch, fastest pass, around this round
    bare_median_pps: float = float("nan")  # the same from its median pass (set by run)

    @property
    def efficiency(self) -> float:
        return self.photos_per_second / self.bare_pps if self.answered else float("nan")

    @property
    def efficiency_vs_median(self) -> float:
        return self.photos_per_second / self.bare_median_pps if self.answered else float("nan")

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def photos_per_second(self) -> float:
        return self.answered / max(self.latencies) if self.latencies else 0.0

    @property
    def cpu_ms_per_photo(self) -> float:
        return 1000.0 * self.cpu_seconds / self.answered if self.answered else float("nan")

    @property
    def cores_used(self) -> str:
        wall = max(self.latencies, default=0.0)
        return f"{self.cpu_seconds / wall:.2f}+{self.fake_cpu_seconds / wall:.2f}" if wall else "-"

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a live process."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    return stat_fields(Path(f"/proc/{pid}/stat"))[0]


def page_faults(pid: int) -> int:
    """Minor page faults of a live process so far (all its threads): each is a fresh page the kernel zeroed."""
    return stat_fields(Path(f"/proc/{pid}/stat"))[1]


def stat_fields(stat_file: Path) -> tuple[float, int]:
    """(CPU seconds, minor page faults) from a /proc/.../stat file: a process's or one of its threads'."""
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread name (/proc/PID/task/*/comm): the bot names its threads (classify,
    decode_N, heatmaps; OpenMP threads take the name of the thread that started them); ``python`` is the
    event loop and asyncio's helper threads. Threads that ended are not counted."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = stat_fields(task / "stat")[0]
        except OSError:  # the thread ended meanwhile
            continue
        group = name.rstrip("0123456789_") or name
        totals[group] = totals.get(group, 0.0) + seconds
    return totals


def memory_breakdown(pid: int) -> dict[str, float]:
    """Resident MB per kind of mapping: CUDA libraries, torch's CPU libraries, other libraries, the heap."""
    totals: dict[str, float] = {}
    kind = "heap and other anonymous memory (weights, activations, Python objects)"
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping header: "start-end perms offset dev inode [path]"
                parts = line.split(maxsplit=5)
                kind = mapping_kind(parts[5].strip() if len(parts) > 5 else "")
            elif first == "Rss:":
                totals[kind] = totals.get(kind, 0.0) + int(line.split()[1]) / 1024
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def mapping_kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if "/nvidia/" in path or any(part in name for part in ("cuda", "cudnn", "cublas", "cufft", "curand", "cusparse",
                                                           "cusolver", "nccl", "nvrtc", "nvJit", "cupti", "triton")):
        return "CUDA libraries (absent from a CPU-only torch)"
    if "/torch/" in path or "/torchvision" in path:
        return "torch CPU libraries (libtorch_cpu, oneDNN, ...)"
    if path.endswith(".so") or ".so." in path or path.endswith(".pyd"):
        return "other shared libraries (Python extensions, libc, ...)"
    if path in ("", "[heap]") or path.startswith("[anon"):
        return "heap and other anonymous memory (weights, activations, Python objects)"
    if path.startswith("["):
        return "stack and kernel mappings"
    return "other mapped files (python binary, fonts, ...)"


async def burst(fake: FakeTelegram, pid: int, users: int, photo: bytes, first_user: int, timeout: float) -> Burst:
    # The updates (and their PhotoSize variants) are built before the clock starts.
    updates = [fake.photo_update(photo, user_id=first_user + i) for i in range(users)]
    wanted = {(u["message"]["chat"]["id"], u["message"]["message_id"]) for u in updates}
    mark = fake.mark()
    cpu_before, fake_cpu_before, threads_before = cpu_seconds(pid), time.process_time(), cpu_by_thread(pid)
    faults_before = page_faults(pid)
    started = time.monotonic()
    for update in updates:  # push() does not yield to the loop: all N are queued before the bot's poll returns
        await fake.push(update)
    answers = await fake.wait_for_calls(
        None, users, lambda c: c.method in ("sendMessage", "sendPhoto") and (c.chat_id, c.reply_to) in wanted,
        after=mark, timeout=timeout)
    status, cpu, fake_cpu = proc_status(pid), cpu_seconds(pid) - cpu_before, time.process_time() - fake_cpu_before
    threads_cpu = {name: seconds - threads_before.get(name, 0.0) for name, seconds in cpu_by_thread(pid).items()}
    latencies = [call.at - started for call in answers if call.ok and not is_busy(call.text)]
    busy = sum(1 for call in answers if is_busy(call.text))
    other = [repr(call) for call in answers if not call.ok]
    return Burst(users, latencies, busy, other, status["VmHWM"] / 1024, status["VmRSS"] / 1024, cpu, fake_cpu,
                 {name: seconds for name, seconds in threads_cpu.items() if seconds > 0}, page_faults(pid) - faults_before)


async def operator_stats(fake: FakeTelegram, timeout: float) -> str:
    update = await fake.push(fake.command_update("/stats", user_id=ADMIN_ID))
    call = await fake.wait_for_answer(update["message"], timeout=timeout)
    return call.text


def bare_model(checkpoint: Path, photo: Path, batches: tuple[int, ...], repeats: int, frozen_graph: bool):
    classifier = load_classifier(checkpoint)
    if frozen_graph:  # what the bot serves with (FROZEN_GRAPH), so the two are compared like for like
        classifier.use_frozen_graph()
    return measure_batches(classifier, photo, batches, repeats)


def print_bursts(bursts: list[Burst], bare_b1_ms: float, bare_best_cpu_ms: float) -> None:
    print(f"{'users':>5} | {'answered':>8} | {'busy':>4} | {'p50 s':>6} | {'p95 s':>6} | {'max s':>6} | "
          f"{'photos/s':>8} | {'efficiency':>10} | {'vs median':>9} | {'CPU ms/photo':>12} | {'CPU eff.':>8} | "
          f"{'cores used':>10} | {'peak RSS MB':>11}")
    print("-" * 147)
    for b in bursts:
        cpu_efficiency = bare_best_cpu_ms / b.cpu_ms_per_photo if b.answered else float("nan")
        print(f"{b.users:>5} | {b.answered:>8} | {b.busy:>4} | {b.percentile(0.5):>6.2f} | {b.percentile(0.95):>6.2f} | "
              f"{max(b.latencies, default=float('nan')):>6.2f} | {b.photos_per_second:>8.2f} | {b.efficiency:>10.2f} | "
              f"{b.efficiency_vs_median:>9.2f} | "
              f"{b.cpu_ms_per_photo:>12.0f} | {cpu_efficiency:>8.2f} | {b.cores_used:>10} | {b.peak_rss_mb:>11.0f}")
        if b.answered:
            shares = sorted(b.thread_cpu_seconds.items(), key=lambda item: -item[1])
            print("      CPU ms/photo by thread: " + ", ".join(f"{name} {1000 * sec / b.answered:.0f}" for name, sec in shares)
                  + f"; page faults/photo: {b.page_faults / b.answered:.0f}")
        for problem in b.other:
            print(f"      failed call: {problem}")
    print(f"efficiency = photos/s / the bare model's best photos/s (its fastest pass at its best batch), measured "
          f"before and after each round ({', '.join(f'{pps:.2f}' for pps in dict.fromkeys(b.bare_pps for b in bursts))}); "
          f"vs median = the same against its median pass "
          f"({', '.join(f'{pps:.2f}' for pps in dict.fromkeys(b.bare_median_pps for b in bursts))}), what it sustains on "
          f"this machine as it is at the time, as the burst has to; one photo alone at batch 1: "
          f"{bare_b1_ms:.0f} ms of pure model time).\nCPU eff. = the bare model's CPU ms per photo at its best batch "
          f"({bare_best_cpu_ms:.0f}) / the bot's CPU ms per answered photo: the share of the bot's CPU that is "
          f"model work, steadier than wall time when other processes share the cores.\n"
          f"cores used = CPU seconds / seconds to the last answer: the bot + the fake Telegram server (this process).")


def print_summary(bursts: list[Burst]) -> None:
    """Per N, the median of the rounds (the machine is shared and noisy: one burst can be an outlier)."""
    print(f"median of {len(bursts) // len({b.users for b in bursts})} rounds per N:")
    print(f"{'users':>5} | {'p50 s':>6} | {'p95 s':>6} | {'photos/s':>8} | {'efficiency':>10} | {'range':>11} | "
          f"{'vs median':>9} | {'range':>11} | {'CPU/photo':>9}")
    for users in dict.fromkeys(b.users for b in bursts):
        rounds = [b for b in bursts if b.users == users and b.answered]
        if not rounds:
            continue
        efficiencies = [b.efficiency for b in rounds]
        against_median = sorted(b.efficiency_vs_median for b in rounds)
        median = sorted(rounds, key=lambda b: b.efficiency)[(len(rounds) - 1) // 2]  # the lower one of an even count
        cpu_eff = statistics.median(b.cpu_ms_per_photo for b in rounds)
        print(f"{users:>5} | {statistics.median(b.percentile(0.5) for b in rounds):>6.2f} | "
              f"{statistics.median(b.percentile(0.95) for b in rounds):>6.2f} | {median.photos_per_second:>8.2f} | "
              f"{median.efficiency:>10.2f} | {min(efficiencies):.2f}-{max(efficiencies):.2f} | "
              f"{against_median[(len(rounds) - 1) // 2]:>9.2f} | {against_median[0]:.2f}-{against_median[-1]:.2f} | "
              f"{cpu_eff:>6.0f} ms")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,8,30,100", help="burst sizes, comma-separated (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of bursts; the summary gives the median per N")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a bot setting for this run, e.g. --env QUEUE_SIZE=128 --env MAX_BATCH=32")
    parser.add_argument("--photo", type=Path, default=SEED_PHOTO, help="the photo every user sends")
    parser.add_argument("--bare-batches", default="1,2,4,8,16,32", help="bare model batch sizes")
    parser.add_argument("--bare-repeats", type=int, default=5,
                        help="timed passes per bare batch size (the fastest and the median are reported)")
    parser.add_argument("--keep-log", type=Path, metavar="PATH", help="copy the bot's log here at the end")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--burst-timeout", type=float, default=120.0, help="seconds per burst, plus 3 s per user")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    photo_path = seed_photo_path(args.photo)
    photo = photo_path.read_bytes()
    extra = dict(item.split("=", 1) for item in args.env)
    users_list = [int(n) for n in args.users.split(",") if n.strip()]
    bare_batches = tuple(int(b) for b in args.bare_batches.split(",") if b.strip())
    threads = configure_torch_threads()
    keep_freed_memory()  # the bare model runs with the bot's malloc settings, so the comparison is like for like
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        checkpoint = make_random_checkpoint(workdir)
        fake = await FakeTelegram().start()
        process = None
        try:
            env = bot_environment(fake, checkpoint, workdir / "data", extra)
            frozen_graph = Settings.from_env(env, env_file=None).frozen_graph
            print_machine()
            print(f"{available_cores()} cores; bot settings from the bench: {shown_settings(env)}")
            process, startup = await start_bot(fake, env, workdir, args.startup_timeout)
            status = proc_status(process.pid)
            print(f"start-up until the first getUpdates: {startup:.1f} s; idle RSS {status['VmRSS'] / 1024:.0f} MB, "
                  f"{status['Threads']} threads")

            # The bare model in this process while the bot idles in its long poll (off the loop, so the
            # fake server keeps answering). Measured again after the bursts: the machine's load drifts.
            before = await asyncio.to_thread(bare_model, checkpoint, photo_path, bare_batches, args.bare_repeats, frozen_graph)
            print(format_table(before, f"bare model before the bursts ({threads} threads, "
                                       f"{'frozen graph' if frozen_graph else 'eager'} like the bot)"))

            # Each round of bursts is compared with the bare model measured just before and just after it:
            # the machine is shared, and its speed drifts by 10-30% within minutes.
            bursts, first_user, round_bare = [], FIRST_USER_ID, [best(before)]
            for round_number in range(args.repeats):  # round after round, so slow drift hits every N alike
                this_round = []
                for users in users_list:
                    this_round.append(await burst(fake, process.pid, users, photo, first_user, args.burst_timeout + 3 * users))
                    first_user += users
                if round_number < args.repeats - 1:
                    between = await asyncio.to_thread(bare_model, checkpoint, photo_path, (best(before).batch,), args.bare_repeats,
                                                  frozen_graph)
                    round_bare.append(between[-1])
                    around = round_bare[-2:]
                else:
                    after = await asyncio.to_thread(bare_model, checkpoint, photo_path, (1, best(before).batch), args.bare_repeats,
                                                frozen_graph)
                    around = [round_bare[-1], after[-1]]
                for item in this_round:
                    item.bare_pps = statistics.mean(t.photos_per_second for t in around)
                    item.bare_median_pps = statistics.mean(t.median_photos_per_second for t in around)
                bursts += this_round

            best_cpu_ms = statistics.mean([best(before).cpu_ms_per_photo, after[-1].cpu_ms_per_photo])
            b1_ms = statistics.mean([before[0].ms_per_photo, after[0].ms_per_photo]) if before[0].batch == 1 else float("nan")
            print(f"bare model after the bursts: batch 1 {after[0].ms_per_photo:.0f} ms/photo, batch {after[-1].batch} "
                  f"{after[-1].ms_per_photo:.0f} ms/photo ({after[-1].photos_per_second:.2f} photos/s)")
            print()
            print_bursts(bursts, b1_ms, best_cpu_ms)
            if args.repeats > 1:
                print()
                print_summary(bursts)
            print()
            print("operator view (/stats):\n  " + (await operator_stats(fake, 30)).replace("\n", "\n  "))
            print()
            print(f"bot memory now (after the bursts; peak VmHWM {proc_status(process.pid)['VmHWM'] / 1024:.0f} MB):")
            for kind, mb in memory_breakdown(process.pid).items():
                print(f"  {mb:>7.0f} MB  {kind}")
        finally:
            if process is not None:
                took, code = await stop_bot(process)
                print(f"SIGTERM -> exit status {code} in {took:.1f} s")
                if code not in (0, None):
                    print(tail(workdir / "bot.log"))
                if args.keep_log:
                    shutil.copyfile(workdir / "bot.log", args.keep_log)
                    print(f"the bot's log: {args.keep_log}")
            await fake.stop()
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
