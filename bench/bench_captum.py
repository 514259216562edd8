"""The bot's exact occlusion map (the OpenVINO export engine, bf16 and fp32) next to captum's Occlusion on torch fp32,
in one run: the seed's 8/4 map and the default 16/8 one (issue 28's map aims: 16/8 <= 2.5 s, 8/4 <= 8 s).

    python bench/bench_captum.py --checkpoint /tmp/bench28/model.pt [--settings 16/8,8/4] [--repeats 2,1]

The checkpoint needs its export (``python -m model export --checkpoint FILE``); ``--random`` makes a random-init
checkpoint and its export in a temporary folder. ``--photo`` (the seed photos are in ../shared/datasets/seed/);
without it the seed saree where ../shared has it, else a generated photo.

Start-up is excluded: the engine is prepared, both precisions compiled and one untimed 56/28 map run in each, and
captum's network is warmed, before the clock starts. Per repeat the four run one after the other (bf16, fp32,
torch incremental fp32, captum), so all meet the same drift of a shared machine; medians and ranges over ``--repeats`` (one count per
setting). The bot's bf16 map is what the export engine serves: one whose range is within bf16's noise is redone in
fp32 (its time includes that; the line says so). captum's forward is the softmax of the same network, batched
``--batch`` occluded copies per pass (the bot's WHY_BATCH_SIZE default), its baseline 0 as the bot's zeroed patch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import default_photo, make_random_checkpoint, median_range, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.engines import load_engine  # noqa: E402
from model.incremental import IncrementalOcclusion  # noqa: E402
from model.occlusion import incremental_occlusion_map  # noqa: E402
from model.occlusion_grid import BF16_MAP_NOISE  # noqa: E402
from model.openvino_engine import OpenVINOEngine, OpenVINOOcclusion  # noqa: E402


def load(out: str) -> str:
    return f"{out} (load {os.getloadavg()[0]:.2f})"


def captum_map(network, tensor: torch.Tensor, target: int, patch: int, stride: int, batch: int) -> np.ndarray:
    from captum.attr import Occlusion

    def probabilities(inputs):
        return torch.softmax(network(inputs), dim=1)

    with torch.inference_mode():
        attribution = Occlusion(probabilities).attribute(tensor, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                                         baselines=0.0, target=target, perturbations_per_eval=batch)
    return attribution[0].sum(0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--random", action="store_true", help="a random-init checkpoint (and its export) instead")
    parser.add_argument("--photo", type=Path, help="default: a generated photo (or the seed saree where ../shared has it)")
    parser.add_argument("--settings", default="16/8,8/4")
    parser.add_argument("--repeats", default="2,1", help="repeats per setting, one count each (or one for all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip-captum", default="", help="settings without captum (e.g. 8/4: it takes minutes)")
    args = parser.parse_args()
    print_machine()
    threads = os.cpu_count() or 2
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint
        if args.random or path is None:
            path = make_random_checkpoint(Path(scratch))
            subprocess.run([sys.executable, "-m", "model", "export", "--checkpoint", str(path)], check=True,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        engine, why = load_engine(path, precision="bf16")
        if not isinstance(engine, OpenVINOEngine):
            raise SystemExit(f"{path} has no valid export ({why}): python -m model export --checkpoint {path}")
        started = time.perf_counter()
        engine.prepare(workers=1, threads=threads)
        photo_name, photo = default_photo(args.photo)
        image = engine.decode(photo)
        clean = engine.forward("fp32").probabilities(image[None])[0]
        target = int(clean.argmax())
        classifier = load_classifier(path)
        network = classifier.network
        tensor = torch.from_numpy(image)[None].contiguous(memory_format=torch.channels_last)
        incremental = IncrementalOcclusion(network)

        def torch_incremental(patch: int, stride: int) -> np.ndarray:
            return incremental_occlusion_map(incremental, torch.from_numpy(image), target, patch, stride, args.batch)

        torch_incremental(56, 28)
        for precision in ("bf16", "fp32"):
            OpenVINOOcclusion(engine, 56, 28, args.batch, precision).explain(image, target)
        captum_map(network, tensor, target, 112, 112, args.batch)
        print(f"model: {path} ({'random-init' if args.random or args.checkpoint is None else 'given'}); photo {photo_name}, "
              f"class {engine.class_names[target]} (p={clean[target]:.3f}); {threads} threads; batch {args.batch}; "
              f"start-up excluded ({time.perf_counter() - started:.1f} s)")
        settings = args.settings.split(",")
        counts = [int(c) for c in args.repeats.split(",")]
        counts = counts * len(settings) if len(counts) == 1 else counts
        skipped = set(filter(None, args.skip_captum.split(",")))
        summary = []
        for setting, repeats in zip(settings, counts):
            patch, stride = (int(v) for v in setting.split("/"))
            times: dict[str, list[float]] = {"OV bf16 (bot)": [], "OV fp32 (bot)": [], "torch incr. fp32": [], "captum torch fp32": []}
            maps = {}
            for number in range(repeats):
                for precision in ("bf16", "fp32"):
                    begun = time.perf_counter()
                    result = OpenVINOOcclusion(engine, patch, stride, args.batch, precision).explain(image, target)
                    times[f"OV {precision} (bot)"].append(time.perf_counter() - begun)
                    maps[precision] = result.occlusion_map
                begun = time.perf_counter()
                maps["torch"] = torch_incremental(patch, stride)
                times["torch incr. fp32"].append(time.perf_counter() - begun)
                if setting not in skipped:
                    begun = time.perf_counter()
                    maps["captum"] = captum_map(network, tensor, target, patch, stride, args.batch)
                    times["captum torch fp32"].append(time.perf_counter() - begun)
                print(load(f"{setting} repeat {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v)))
            redone = float(np.ptp(maps["fp32"])) < BF16_MAP_NOISE
            error = float(np.abs(maps["bf16"] - maps["fp32"]).max())
            positions = maps["fp32"].shape[0] ** 2
            torch_error = float(np.abs(maps["torch"] - maps["fp32"]).max())
            print(f"{setting}: {positions} positions; fp32 map range {np.ptp(maps['fp32']):.4f}, largest |value| "
                  f"{np.abs(maps['fp32']).max():.4f}; bf16 map vs fp32 max |diff| {error:.4f}; "
                  f"torch incremental vs OV fp32 max |diff| {torch_error:.2e}"
                  + ("; the bf16 map was within bf16 noise and redone in fp32 (its time includes both)" if redone else ""))
            reference = statistics.median(times["captum torch fp32"]) if times["captum torch fp32"] else float("nan")
            for name, values in times.items():
                if values:
                    ratio = reference / statistics.median(values)
                    summary.append(f"{setting:>5} | {name:<18} | {median_range(values):>22} | {ratio:8.2f}x | {len(values)}")
        print("\nsetting | engine | seconds, median (range) | captum / this | repeats")
        print("\n".join(summary))
    print(load("done"))


if __name__ == "__main__":
    main()
