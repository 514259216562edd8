"""The bot on a simulated small server: 1 GB of memory and one CPU (cgroup v1), against the fake Bot API.

    python bench/bench_small_server.py [--code DIR] [--python PY] [--memory 1G] [--cpus 0] [--checkpoint FILE]
                                       [--export] [--photos 30] [--whys 3] [--env NAME=VALUE ...]

The real bot (``python -m bot`` from ``--code``, default this checkout, run by ``--python``, default this
interpreter) starts inside a fresh memory cgroup (``memory.limit_in_bytes``, and the same for memory+swap)
and a cpuset cgroup of ``--cpus`` (default the first CPU), both under /sys/fs/cgroup and removed at the end.
Measured, one run:

- start-up: from the launch to the bot's first getUpdates;
- a burst of ``--photos`` photos from as many chats at once: how many were answered, p50/p95/max;
- then ``--whys`` of those chats send /why at once: each one's first and final map, and the slowest final;
- the bot's peak RSS (VmHWM, read while it runs), the cgroup's ``memory.max_usage_in_bytes`` (page cache of
  the model files included), its ``failcnt`` and the OOM kills (``memory.oom_control``).

``--export`` writes the OpenVINO export beside the checkpoint first (in this process, outside the cgroup), so
a bot that serves it without torch does. Every photo differs (a coloured corner), the same set in every run,
so the heat-map cache answers nothing. Where the cgroups are not writable (not root, cgroup v2) it says so
and exits 0. Numbers, not pass/fail; the aims (issue 26): all answered, 0 OOM kills, peak RSS <= 600 MB,
start-up <= 20 s with an export, and today's speed on the same core or better.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_why_load import timings_since  # noqa: E402
from harness import (  # noqa: E402
    FIRST_USER_ID,
    REPO,
    add_common_arguments,
    bot_environment,
    default_photo,
    distinct_photos,
    is_busy,
    keep_log,
    make_random_checkpoint,
    message_key,
    percentile,
    print_machine,
    replies_to,
    shown_settings,
    stop_bot,
    tail,
)

from devtools.fake_telegram import FakeTelegram  # noqa: E402

CGROUP = Path("/sys/fs/cgroup")


class SmallServer:
    """A memory and a cpuset cgroup (v1) of their own; ``wrap`` runs a command inside both."""

    def __init__(self, memory: str, cpus: str):
        name = f"bench-small-{os.getpid()}"
        self.memory, self.cpuset = CGROUP / "memory" / name, CGROUP / "cpuset" / name
        self.limit, self.cpus = memory, cpus

    def why_not(self) -> str | None:
        if not (CGROUP / "memory" / "memory.limit_in_bytes").is_file() or not (CGROUP / "cpuset" / "cpuset.cpus").is_file():
            return f"no cgroup v1 memory and cpuset controllers under {CGROUP}"
        if not os.access(CGROUP / "memory", os.W_OK) or not os.access(CGROUP / "cpuset", os.W_OK):
            return f"{CGROUP}/memory and cpuset are not writable here (run as root)"
        return None

    def __enter__(self) -> SmallServer:
        self.memory.mkdir()
        self.cpuset.mkdir()
        (self.memory / "memory.limit_in_bytes").write_text(self.limit)
        memsw = self.memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swapping past the limit either
            memsw.write_text(self.limit)
        (self.cpuset / "cpuset.mems").write_text((CGROUP / "cpuset" / "cpuset.mems").read_text())
        (self.cpuset / "cpuset.cpus").write_text(self.cpus)
        return self

    def wrap(self, command: list[str]) -> list[str]:
        enter = f"echo $$ > {self.memory}/cgroup.procs && echo $$ > {self.cpuset}/cgroup.procs && exec \"$@\""
        return ["sh", "-c", enter, "sh", *command]

    def read(self, name: str) -> str:
        try:
            return (self.memory / name).read_text()
        except OSError:
            return ""

    def oom_kills(self) -> int:
        for line in self.read("memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return -1

    def __exit__(self, *exc) -> None:
        for folder in (self.memory, self.cpuset):
            for _ in range(50):  # the bot's process must be gone before its cgroup can go
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                print(f"warning: could not remove {folder}")


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def start_bot(fake, env, workdir: Path, server: SmallServer, python: str, timeout: float):
    polls = len(fake.polls)
    launched = time.monotonic()
    with open(workdir / "bot.log", "ab") as output:
        process = await asyncio.create_subprocess_exec(*server.wrap([python, "-m", "bot"]), cwd=workdir, env=env,
                                                       stdout=output, stderr=asyncio.subprocess.STDOUT)
    waiter = asyncio.ensure_future(fake.wait_for_poll(polls, timeout=timeout))
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not waiter.done() or waiter.exception() is not None:
        waiter.cancel()
        return process, None
    return process, waiter.result() - launched


async def measure(args, server: SmallServer, checkpoint: Path, photos: list[bytes], workdir: Path) -> dict:
    fake = await FakeTelegram().start()
    process, figures = None, {}
    peak = [0.0]

    async def watch_rss():
        while process is not None and process.returncode is None:
            peak[0] = max(peak[0], vm_hwm_mb(process.pid) or 0.0)
            await asyncio.sleep(0.2)

    watcher = None

    async def unless_it_dies(awaitable):
        """``awaitable``'s result, or TimeoutError the moment the bot exits (an OOM kill) instead."""
        task, exited = asyncio.ensure_future(awaitable), asyncio.ensure_future(process.wait())
        await asyncio.wait({task, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not task.done():
            task.cancel()
            raise TimeoutError(f"the bot exited with status {process.returncode}")
        return task.result()

    try:
        env = bot_environment(fake, checkpoint, workdir / "data", dict(args.env))
        env["PYTHONPATH"] = str(args.code)
        print(f"bot: {args.python} -m bot from {args.code}; settings {shown_settings(env)}")
        updates = [fake.photo_update(photo, user_id=FIRST_USER_ID + i) for i, photo in enumerate(photos)]
        process, startup = await start_bot(fake, env, workdir, server, args.python, args.startup_timeout)
        watcher = asyncio.ensure_future(watch_rss())
        figures["startup"] = startup
        figures["phases"] = {"start-up": vm_hwm_mb(process.pid)}
        if startup is None:
            print("the bot did not start polling:\n" + tail(workdir / "bot.log"))
            return figures
        mark, started = fake.mark(), time.monotonic()
        for update in updates:
            await fake.push(update)
        answers = await unless_it_dies(fake.wait_for_calls(None, len(updates), replies_to({message_key(u) for u in updates}),
                                                           after=mark, timeout=args.timeout, ok=None))
        figures["latencies"] = [c.at - started for c in answers if c.ok and not is_busy(c.text)]
        figures["busy"] = sum(1 for c in answers if c.ok and is_busy(c.text))
        figures["phases"]["the burst"] = vm_hwm_mb(process.pid)
        whys = [fake.command_update("/why", user_id=FIRST_USER_ID + i) for i in range(args.whys)]
        mark, started = fake.mark(), time.monotonic()
        for update in whys:
            await fake.push(update)
        while True:
            timings = timings_since(fake, mark, started, whys)
            if all(t.done for t in timings) or time.monotonic() > started + args.timeout or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        figures["whys"] = timings
        figures["phases"]["the maps"] = vm_hwm_mb(process.pid)
        peak[0] = max(peak[0], vm_hwm_mb(process.pid) or 0.0)
    except TimeoutError as error:
        figures["error"] = f"timed out: {error}"
    finally:
        if watcher is not None:
            watcher.cancel()
        if process is not None:
            figures["alive"] = process.returncode is None
            peak[0] = max(peak[0], vm_hwm_mb(process.pid) or 0.0)
            took, code = await stop_bot(process)
            figures["exit"] = code
            keep_log(workdir, args.keep_log)
            if code not in (0, None):
                print(f"SIGTERM -> exit status {code}\n" + tail(workdir / "bot.log"))
        await fake.stop()
    figures["vm_hwm_mb"] = peak[0]
    return figures


def report(figures: dict, server: SmallServer) -> None:
    startup = figures.get("startup")
    print(f"start-up until the first getUpdates: {'-' if startup is None else f'{startup:.1f} s'}")
    latencies = figures.get("latencies", [])
    if "latencies" in figures:
        print(f"burst: {len(latencies)} answered (+{figures['busy']} busy) of the photos; p50 {percentile(latencies, 0.5):.2f} s, "
              f"p95 {percentile(latencies, 0.95):.2f} s, max {max(latencies, default=float('nan')):.2f} s")
    for timing in figures.get("whys", []):
        first = "-" if timing.first is None else f"{timing.first:.1f} s"
        final = "-" if timing.final is None else f"{timing.final:.1f} s"
        print(f"  /why chat {timing.user}: first map {first}, final map {final} {timing.note}")
    finals = [t.final for t in figures.get("whys", []) if t.final is not None]
    if "whys" in figures:
        print(f"/why: {len(finals)} of {len(figures['whys'])} final maps; slowest {max(finals, default=float('nan')):.1f} s")
    usage = int(server.read("memory.max_usage_in_bytes") or 0) / 2**20
    phases = ", ".join(f"{name} {mb:.0f}" for name, mb in figures.get("phases", {}).items() if mb)
    print(f"VmHWM after each phase (MB): {phases or '-'}")
    print(f"peak RSS (VmHWM): {figures.get('vm_hwm_mb', 0):.0f} MB; cgroup max_usage_in_bytes: {usage:.0f} MB "
          f"(limit {server.limit}); failcnt {server.read('memory.failcnt').strip() or '?'}; OOM kills: {server.oom_kills()}; "
          f"bot alive at the end: {figures.get('alive')}; exit status {figures.get('exit')}")
    if "error" in figures:
        print(figures["error"])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose bot runs (default: this one)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (venv) that runs it")
    parser.add_argument("--memory", default="1G", help="memory.limit_in_bytes (default %(default)s)")
    parser.add_argument("--cpus", default="0", help="cpuset.cpus (default %(default)s: one CPU)")
    parser.add_argument("--export", action="store_true", help="write the OpenVINO export beside the checkpoint first")
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--whys", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the burst, and for the maps")
    return parser.parse_args(argv)


async def run(args) -> int:
    print_machine()
    server = SmallServer(args.memory, args.cpus)
    reason = server.why_not()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    name, base = default_photo(args.photo)
    photos = distinct_photos(base, args.photos)
    with tempfile.TemporaryDirectory(prefix="bench-small-server-") as tmp:
        workdir = Path(tmp)
        checkpoint = args.checkpoint or make_random_checkpoint(workdir)
        if args.export:
            from model.export import export_checkpoint

            export_checkpoint(checkpoint, progress=lambda line: print(f"export: {line}"))
        print(f"photo: {name}; {args.photos} photos from {args.photos} chats, then {args.whys} /why at once; "
              f"cgroup: memory {args.memory}, cpus {args.cpus}")
        print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        with server:
            figures = await measure(args, server, checkpoint, photos, workdir)
            report(figures, server)
        print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


def main(argv=None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
