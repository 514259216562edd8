"""INT8 against bf16 and fp32 on OpenVINO: ms/image per batch, top-1 agreement, probability and map differences.

    python bench/bench_int8.py --checkpoint ../proxy/model.pt --calibration ../proxy/data --photos ../proxy/eval
    python bench/bench_int8.py --random            # the random-init checkpoint (WEIGHTS=none), random calibration

Every figure of one run comes from the same process, the passes of each batch size interleaved across the
precisions (best of ``--rounds``), so the ratios hold on a shared machine; the CPU, its flags and the load are
printed. ``--maps N``: also N photos' 56/28 maps in int8 and bf16 against fp32 (the largest |difference|,
against model.occlusion.BF16_MAP_TOLERANCE).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import make_random_checkpoint, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.int8 import calibration_arrays, photo_files, quantize_int8  # noqa: E402
from model.occlusion import BF16_MAP_TOLERANCE  # noqa: E402
from model.openvino_occlusion import OpenVINOOcclusion, softmax  # noqa: E402
from model.openvino_runtime import load_or_convert  # noqa: E402
from model.preprocess import open_image, preprocess_array  # noqa: E402


def timed(engine: OpenVINOOcclusion, batch: np.ndarray) -> float:
    started = time.perf_counter()
    engine.logits(batch)
    return 1000 * (time.perf_counter() - started) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--random", action="store_true", help="a random-init checkpoint instead")
    parser.add_argument("--calibration", type=Path, help="calibration photos (default: random arrays)")
    parser.add_argument("--photos", type=Path, help="photos for the agreement (default: random arrays)")
    parser.add_argument("--count", type=int, default=300, help="calibration photos")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--maps", type=int, default=0)
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min)")
    with tempfile.TemporaryDirectory() as scratch:
        path = make_random_checkpoint(Path(scratch)) if args.random or args.checkpoint is None else args.checkpoint
        classifier = load_classifier(path)
        config = classifier.preprocess_config
        fp32_model, _ = load_or_convert(classifier.network, "", "fp32", config.crop, None)
        rng = np.random.default_rng(0)
        if args.calibration:
            calibration = calibration_arrays(args.calibration, config, args.count)
        else:
            calibration = [rng.standard_normal((3, config.crop, config.crop)).astype(np.float32) for _ in range(64)]
        started = time.perf_counter()
        int8_model = quantize_int8(fp32_model, calibration)
        print(f"model: {path} ({'random-init' if args.random or args.checkpoint is None else 'trained'}); "
              f"int8 quantized on {len(calibration)} calibration arrays in {time.perf_counter() - started:.1f} s")
        engines = {"fp32": OpenVINOOcclusion(fp32_model, "fp32", args.threads),
                   "bf16": OpenVINOOcclusion(fp32_model, "bf16", args.threads),
                   "int8": OpenVINOOcclusion(int8_model, "int8", args.threads)}
        print(f"\nms/image (best of {args.rounds}, {args.threads} threads, one stream):")
        print(f"{'batch':>5} | " + " | ".join(f"{name:>6}" for name in engines) + " | int8/bf16 | int8/fp32 | bf16/fp32")
        for size in (int(b) for b in args.batches.split(",")):
            batch = rng.standard_normal((size, 3, config.crop, config.crop)).astype(np.float32)
            best = {name: float("inf") for name in engines}
            for engine in engines.values():
                engine.logits(batch)  # first pass at this shape
            for _ in range(args.rounds):
                for name, engine in engines.items():
                    best[name] = min(best[name], timed(engine, batch))
            print(f"{size:>5} | " + " | ".join(f"{best[name]:6.1f}" for name in engines)
                  + f" | {best['int8'] / best['bf16']:9.2f} | {best['int8'] / best['fp32']:9.2f} | {best['bf16'] / best['fp32']:9.2f}")
        if args.photos:
            files = photo_files(args.photos, 10_000)
            images = np.stack([preprocess_array(open_image(p, draft_size=config.resize), config) for p in files])
        else:
            images = rng.standard_normal((64, 3, config.crop, config.crop)).astype(np.float32)
        with torch.inference_mode():
            reference = torch.softmax(classifier.network(torch.from_numpy(images)).float(), dim=1).numpy()
        print(f"\nagreement with torch fp32 on {len(images)} {'photos' if args.photos else 'random arrays'}:")
        for name, engine in engines.items():
            probs = np.concatenate([softmax(engine.logits(images[i:i + 16])) for i in range(0, len(images), 16)])
            same = probs.argmax(1) == reference.argmax(1)
            top2 = np.sort(reference, axis=1)[:, -2:]
            margins = top2[:, 1] - top2[:, 0]
            flips = ", ".join(f"fp32 margin {m:.3f}" for m in margins[~same])
            print(f"  {name}: top-1 agreement {same.mean() * 100:.2f}% ({same.sum()}/{len(same)}), max prob diff "
                  f"{np.abs(probs - reference).max():.4f}, p99 {np.quantile(np.abs(probs - reference).max(1), 0.99):.4f}"
                  + (f"; flips at {flips}" if flips else ""))
        if args.maps:
            print(f"\n56/28 maps against fp32 OpenVINO (tolerance {BF16_MAP_TOLERANCE}):")
            worst = {"bf16": [], "int8": []}
            ranges = []
            for image in images[:: max(1, len(images) // args.maps)][: args.maps]:
                grids = {name: engine.probability_grid(image, 56, 28, 16) for name, engine in engines.items()}
                cleans = {name: softmax(engine.logits(image[None]))[0] for name, engine in engines.items()}
                target = int(cleans["fp32"].argmax())
                maps = {name: cleans[name][target] - grids[name][target] for name in engines}
                ranges.append(float(np.ptp(maps["fp32"])))
                for name in worst:
                    worst[name].append(float(np.abs(maps[name] - maps["fp32"]).max()))
            for name, values in worst.items():
                print(f"  {name}: max |map - fp32| {max(values):.4f}, median {np.median(values):.4f} over {len(values)} maps "
                      f"(fp32 map ranges: median {np.median(ranges):.3f})")
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
