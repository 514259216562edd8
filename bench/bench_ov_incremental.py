"""Exact occlusion-map seconds on OpenVINO, in one run: batched passes (the async queue, model/openvino_engine.py)
against incremental inference (model/openvino_incremental.py), fp32 and bf16, and the torch fp32 incremental
engine as the reference; each map's max abs difference to the batched fp32 map; the incremental engine's time
per stage; and one lever at a time (the batch size).

    cp /work/proxy/model.pt /tmp/ovinc/model.pt && python -m model export --checkpoint /tmp/ovinc/model.pt
    flock /tmp/bench.lock python bench/bench_ov_incremental.py --checkpoint /tmp/ovinc/model.pt --photos ../proxy/eval
    flock /tmp/bench.lock taskset -c 0 python bench/bench_ov_incremental.py ... --settings 16/8 --threads 1 --no-torch

Start-up (compilation, the first pass at each shape) is excluded: each engine runs one untimed map first. The
figures are medians of ``--repeats`` maps with their range.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from harness import print_machine  # noqa: E402

from model.export_manifest import export_dir, file_sha256, read_export  # noqa: E402
from model.int8 import photo_files  # noqa: E402
from model.openvino_engine import OpenVINOEngine, OpenVINOOcclusion  # noqa: E402
from model.openvino_incremental import OpenVINOIncrementalOcclusion  # noqa: E402


def timed(function, repeats: int):
    function()  # untimed: compilation and the first passes at these shapes
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint with its export beside it")
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--settings", default="16/8,56/28,8/4")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", default="", help="incremental batch sizes to try on 16/8 (a lever), e.g. 8,32")
    parser.add_argument("--full-shares", default="", help="where the rest runs on whole maps, to try on 16/8 (a lever), e.g. 0.5,1.1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-torch", action="store_true", help="skip the torch incremental reference")
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()}; affinity {sorted(os.sched_getaffinity(0))}; {args.threads} threads; "
          f"batch {args.batch}; median of {args.repeats}")
    export = read_export(export_dir(args.checkpoint), file_sha256(args.checkpoint))
    engine = OpenVINOEngine(export, "fp32", map_engine="batched")
    engine.prepare(workers=1, threads=args.threads)
    files = photo_files(args.photos, 1) if args.photos else []
    image = engine.decode(files[0].read_bytes()) if files else \
        np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    runtime = engine.incremental_runtime()
    print(f"{'setting':>7} | {'engine':<28} | median s | range       | max |diff| to batched fp32")
    for setting in args.settings.split(","):
        patch, stride = (int(v) for v in setting.split("/"))
        reference = None
        rows = []
        for precision in args.precisions.split(","):
            batched = OpenVINOOcclusion(engine, patch, stride, args.batch, precision, min(2, args.threads))
            median, low, high, grid = timed(lambda b=batched, p=precision: b.probability_grid(
                engine.forward(p), image, lambda d, t: None), args.repeats)
            reference = grid if precision == "fp32" else reference
            rows.append((f"OV {precision} batched async", median, low, high, grid))
            incremental = OpenVINOIncrementalOcclusion(runtime, patch, stride, args.batch, precision, engine.forward)
            incremental.profile.clear()
            median, low, high, (_, grid) = timed(lambda e=incremental, p=precision: e.probability_grid(image, p), args.repeats)
            rows.append((f"OV {precision} incremental", median, low, high, grid))
            windowed, full = incremental.geometry.multiply_adds(runtime.plan)
            stages = ", ".join(f"{k} {v / (args.repeats + 1):.2f}" for k, v in incremental.profile.items())
            print(f"        {precision} incremental {setting}: windows {windowed / 1e9:.2f} of {full / 1e9:.2f} GMAC/position "
                  f"({windowed / full:.0%}); seconds per map by stage: {stages}")
        if not args.no_torch:
            import torch

            from model import load_classifier
            from model.occlusion import OcclusionExplainer

            torch.set_num_threads(args.threads)
            explainer = OcclusionExplainer(load_classifier(args.checkpoint).network, patch, stride, args.batch)
            median, low, high, result = timed(lambda e=explainer: e.explain(torch.from_numpy(image)), args.repeats)
            rows.append(("torch fp32 incremental", median, low, high, result.probability_grid))
        fastest = min(r[1] for r in rows)
        for name, median, low, high, grid in rows:
            diff = f"{np.abs(np.asarray(grid) - reference).max():.2e}" if reference is not None else "-"
            print(f"{setting:>7} | {name:<28} | {median:8.2f} | {low:5.2f}-{high:5.2f} | {diff}   (x{median / fastest:.2f})")
    for batch in [int(b) for b in args.batches.split(",") if b]:
        for precision in args.precisions.split(","):
            incremental = OpenVINOIncrementalOcclusion(runtime, 16, 8, batch, precision, engine.forward)
            median, low, high, _ = timed(lambda e=incremental, p=precision: e.probability_grid(image, p), args.repeats)
            print(f"lever: 16/8 {precision} incremental batch {batch}: {median:.2f} s ({low:.2f}-{high:.2f})")
    for share in [float(v) for v in args.full_shares.split(",") if v]:
        for precision in args.precisions.split(","):
            incremental = OpenVINOIncrementalOcclusion(runtime, 16, 8, args.batch, precision, engine.forward, full_share=share)
            median, low, high, _ = timed(lambda e=incremental, p=precision: e.probability_grid(image, p), args.repeats)
            print(f"lever: 16/8 {precision} incremental, whole maps from block {incremental.geometry.full_from} "
                  f"(window >= {share:g} of the map): {median:.2f} s ({low:.2f}-{high:.2f})")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
