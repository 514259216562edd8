"""Does COARSE_MARGIN (model/map_precision.py) keep bf16 fine maps within BF16_MAP_TOLERANCE? Per photo, in one run:
the coarse level's largest drop c (56/28, fp32), the fine map's largest |value| f (16/8, fp32), the bf16 fine map's
max |error| e against it, and the ratios e/c and f/c.

    python bench/bench_map_margin.py --checkpoint /tmp/bench28/model.pt --photos /work/proxy/eval --count 8

The rule serves the fine map in bf16 when c >= BF16_MAP_NOISE x COARSE_MARGIN (0.03 x 3). It is safe when, on every
photo it sends to bf16, e <= BF16_MAP_TOLERANCE (0.015) and the fine map still stands above bf16's noise (f >= noise);
the table says, per margin, how many photos go to bf16 and how many of those break either condition.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from harness import make_random_checkpoint, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.int8 import photo_files  # noqa: E402
from model.map_precision import COARSE_MARGIN  # noqa: E402
from model.occlusion_grid import BF16_MAP_NOISE, BF16_MAP_TOLERANCE  # noqa: E402
from model.openvino_occlusion import OpenVINOOcclusion, softmax  # noqa: E402
from model.openvino_runtime import load_or_convert  # noqa: E402
from model.preprocess import open_image, preprocess_array  # noqa: E402

MARGINS = (1.0, 2.0, 3.0, 4.0, 6.0)


def level(engine: OpenVINOOcclusion, image: np.ndarray, clean: np.ndarray, target: int, patch: int, stride: int,
          batch: int) -> np.ndarray:
    """The occlusion map (clean probability minus occluded) of ``target`` at one setting."""
    return clean[target] - engine.probability_grid(image, patch, stride, batch)[target]


def ratio(value: float, coarse: float) -> str:
    return f"{value / coarse:6.2f}" if coarse > 0 else f"{'-':>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    threads = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint or make_random_checkpoint(Path(scratch))
        classifier = load_classifier(path)
        config = classifier.preprocess_config
        model, _ = load_or_convert(classifier.network, "", "fp32", config.crop, None)
        engines = {p: OpenVINOOcclusion(model, p, threads, 1, 2) for p in ("fp32", "bf16")}
        print(f"model: {path}; photos from {args.photos}; noise {BF16_MAP_NOISE}, bound {BF16_MAP_TOLERANCE}, margin now {COARSE_MARGIN:g}")
        print(f"{'photo':<16} | {'p(top)':>6} | {'c 56/28':>8} | {'f 16/8':>8} | {'e bf16':>8} | {'e/c':>6} | {'f/c':>6}")
        rows = []
        for file in photo_files(args.photos, args.count):
            image = preprocess_array(open_image(file, draft_size=config.resize), config)
            clean = {p: softmax(e.logits(image[None]))[0] for p, e in engines.items()}
            target = int(clean["fp32"].argmax())

            coarse = float(np.abs(level(engines["fp32"], image, clean["fp32"], target, 56, 28, args.batch)).max())
            fine32 = level(engines["fp32"], image, clean["fp32"], target, 16, 8, args.batch)
            error = float(np.abs(level(engines["bf16"], image, clean["bf16"], target, 16, 8, args.batch) - fine32).max())
            fine = float(np.abs(fine32).max())
            rows.append((coarse, fine, error))
            print(f"{file.name:<16} | {clean['fp32'][target]:6.3f} | {coarse:8.4f} | {fine:8.4f} | {error:8.4f} | "
                  f"{ratio(error, coarse)} | {ratio(fine, coarse)}  (load {os.getloadavg()[0]:.2f})")
        c, f, e = (np.array(v) for v in zip(*rows))
        print(f"\nover {len(rows)} photos: e max {e.max():.4f} (bound {BF16_MAP_TOLERANCE}); f/c median "
              f"{np.median(f[c > 0] / c[c > 0]) if (c > 0).any() else float('nan'):.2f}")
        for margin in MARGINS:
            bf16 = c >= BF16_MAP_NOISE * margin
            print(f"  margin {margin:g}: {int(bf16.sum())}/{len(c)} photos to bf16; of those, e > bound: "
                  f"{int((bf16 & (e > BF16_MAP_TOLERANCE)).sum())}, f below noise: {int((bf16 & (f < BF16_MAP_NOISE)).sum())}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
