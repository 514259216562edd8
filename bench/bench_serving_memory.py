"""Where a torch-free bot's memory goes: RSS (and smaps_rollup's anonymous and file-backed parts) after each
step of what ``python -m bot`` does on an OpenVINO export, in one process, one factor at a time.

    python bench/bench_serving_memory.py --checkpoint FILE [--batch 8] [--why-batch 8] [--maps 1]

FILE must have its export (``python -m model export --checkpoint FILE``). Steps: the interpreter; python-telegram-bot;
the bot's own modules; matplotlib (model.render); OpenVINO; the engine prepared (compiled); a classification
batch; ``--maps`` occlusion maps; ``malloc_trim(0)``. Run it once per factor (an environment variable such as
MALLOC_ARENA_MAX=2 or MALLOC_TRIM_THRESHOLD_, or an option) and compare the rows; issue 26's aim is a peak RSS
of at most 600 MB in 1 GB. Prints the CPU model and the load with the figures.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def memory() -> dict[str, float]:
    """VmRSS, VmHWM and smaps_rollup's Anonymous / file-backed RSS, in MB."""
    figures = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) / 1024
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Anonymous":
            figures["anon"] = int(value.split()[0]) / 1024
    figures["file"] = figures["VmRSS"] - figures.get("anon", 0.0)
    return figures


def row(step: str, started: float) -> None:
    m = memory()
    print(f"{step:<44} RSS {m['VmRSS']:6.0f}  HWM {m['VmHWM']:6.0f}  anon {m['anon']:6.0f}  file {m['file']:5.0f} MB  "
          f"({time.perf_counter() - started:5.1f} s)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8, help="classification batch (MAX_BATCH)")
    parser.add_argument("--why-batch", type=int, default=8, help="occluded copies per batch (WHY_BATCH_SIZE)")
    parser.add_argument("--maps", type=int, default=1)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--photo", type=Path, help="map this photo (default: a random-normal image)")
    parser.add_argument("--map-engine", default="auto", choices=("auto", "batched", "incremental"), help="MAP_ENGINE")
    parser.add_argument("--setting", default="32/16", help="the map's patch/stride")
    args = parser.parse_args(argv)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(next((line for line in lscpu.splitlines() if line.startswith("Model name")), "Model name: ?"))
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("env:", {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OV_", "OMP_"))})
    started = time.perf_counter()
    row("interpreter", started)
    import telegram.ext  # noqa: F401

    row("+ python-telegram-bot", started)
    import bot.app  # noqa: F401

    row("+ bot.app (the bot's modules)", started)
    import model.render  # noqa: F401

    row("+ matplotlib (model.render)", started)
    import openvino  # noqa: F401

    row("+ openvino", started)
    import numpy as np

    from model.engines import load_engine, probe_engine

    engine, why = load_engine(args.checkpoint, precision=args.precision, map_engine=args.map_engine)
    assert "OpenVINO" in why, why
    preparation = engine.prepare(workers=1, threads=args.threads, probe_batch=4)
    row(f"+ engine prepared ({preparation.precision})", started)
    probe_engine(engine)
    side = engine.preprocess_config.crop
    batch = np.random.default_rng(0).standard_normal((args.batch, 3, side, side), dtype=np.float32)
    engine.probabilities(batch)
    row(f"+ classification batch of {args.batch}", started)
    patch, stride = (int(v) for v in args.setting.split("/"))
    explainer = engine.explainer(patch, stride, args.why_batch)
    image = engine.decode(args.photo.read_bytes()) if args.photo else batch[0]
    for _ in range(args.maps):
        explainer.explain(image, None, between_batches=lambda done, total: None)
    row(f"+ {args.maps} map(s) {patch}x{stride} ({type(explainer).__name__}), batches of {args.why_batch}", started)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    row("+ malloc_trim(0)", started)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
