"""WHY_MODE=adaptive's fine map (model/adaptive_occlusion.py) against the exact one on many photos, in one run:
SSIM, correlation, the argmax cell, the share of positions computed, and the time as a ratio to the exact map's.

    python bench/bench_adaptive.py --checkpoint /tmp/bench28/model.pt --photos /work/proxy/eval --count 40

Both maps of a photo come from the same OpenVINO model and precision (``--precision``, bf16 by default: what
auto serves on the proxy model), so only the approximation differs. Start-up is excluded (one untimed map first).
A map whose range is 0 has no correlation (counted apart); its SSIM is still defined (model/adaptive_occlusion.ssim).
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
from harness import make_random_checkpoint, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.adaptive_occlusion import adaptive_probability_grid, ssim  # noqa: E402
from model.int8 import photo_files  # noqa: E402
from model.occlusion_grid import grid_positions  # noqa: E402
from model.openvino_occlusion import OpenVINOOcclusion, occluded_copies, softmax  # noqa: E402
from model.openvino_runtime import load_or_convert  # noqa: E402
from model.preprocess import open_image, preprocess_array  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--setting", default="16/8")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    patch, stride = (int(v) for v in args.setting.split("/"))
    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint or make_random_checkpoint(Path(scratch))
        classifier = load_classifier(path)
        config = classifier.preprocess_config
        model, _ = load_or_convert(classifier.network, "", "fp32", config.crop, None)
        engine = OpenVINOOcclusion(model, args.precision, os.cpu_count() or 2, 1, 2)
        files = photo_files(args.photos, args.count)
        starts = grid_positions(config.crop, patch, stride)
        first = preprocess_array(open_image(files[0], draft_size=config.resize), config)
        engine.probability_grid(first, patch, stride, args.batch)  # untimed: the first passes at this shape
        rows = []
        for file in files:
            picture = preprocess_array(open_image(file, draft_size=config.resize), config)
            clean = softmax(engine.logits(picture[None]))[0]
            target = int(clean.argmax())
            begun = time.perf_counter()
            exact = clean[target] - engine.probability_grid(picture, patch, stride, args.batch)[target]
            exact_s = time.perf_counter() - begun
            begun = time.perf_counter()
            grid, computed = adaptive_probability_grid(
                lambda corners, p=picture: softmax(engine.logits(occluded_copies(p, list(corners), patch))), starts, clean, target)
            adaptive_s = time.perf_counter() - begun
            approx = clean[target] - grid[target]
            flat = float(np.ptp(exact)) == 0.0 or float(np.ptp(approx)) == 0.0
            corr = float("nan") if flat else float(np.corrcoef(exact.ravel(), approx.ravel())[0, 1])
            rows.append((ssim(exact, approx), corr, int(np.abs(exact).argmax() == np.abs(approx).argmax()),
                         float(computed.mean()), adaptive_s / exact_s, float(np.ptp(exact)), exact_s))
        s, r, hit, share, ratio, ranges, exact_times = (np.array(c) for c in zip(*rows))
        print(f"model: {path}; {len(rows)} photos from {args.photos}; {args.setting} in {args.precision} OpenVINO, batch {args.batch}")
        print(f"exact map: {np.median(exact_times):.2f} s median ({exact_times.min():.2f}-{exact_times.max():.2f}); "
              f"its range median {np.median(ranges):.4f} (min {ranges.min():.4f}, max {ranges.max():.4f})")
        print(f"SSIM: median {np.median(s):.3f}, min {s.min():.3f}, share >= 0.9: {np.mean(s >= 0.9) * 100:.0f}% "
              f"({int((s >= 0.9).sum())}/{len(s)})")
        print(f"correlation: median {np.nanmedian(r):.3f}, min {np.nanmin(r):.3f} ({int(np.isnan(r).sum())} flat maps without one)"
              if not np.isnan(r).all() else "correlation: every map flat")
        print(f"argmax cell the same: {int(hit.sum())}/{len(hit)}; positions computed: median {np.median(share) * 100:.0f}% "
              f"(range {share.min() * 100:.0f}-{share.max() * 100:.0f}%); time: median {np.median(ratio):.2f}x the exact map's "
              f"(range {ratio.min():.2f}-{ratio.max():.2f})")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
