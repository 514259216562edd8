"""Exact occlusion-map seconds per engine and setting, in one run: OpenVINO batched passes (sync, and the async
queue of model/openvino_occlusion.py with 1 or 2 streams), the torch incremental engine, and the adaptive mode's
quality against the exact map.

    python bench/bench_ov_maps.py --checkpoint ../proxy/model.pt --photos ../proxy/eval --settings 16/8,56/28

Start-up (conversion, compilation, the first pass) is excluded: each engine runs one untimed map first.
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
from model.adaptive_occlusion import adaptive_probability_grid, ssim  # noqa: E402
from model.int8 import photo_files  # noqa: E402
from model.occlusion import OcclusionExplainer, batched_probability_grid  # noqa: E402
from model.openvino_occlusion import OpenVINOOcclusion, occluded_copies, softmax  # noqa: E402
from model.openvino_runtime import load_or_convert  # noqa: E402
from model.preprocess import open_image, preprocess_array  # noqa: E402


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--settings", default="16/8,56/28")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--adaptive", type=int, default=0, help="photos for the adaptive mode's quality (16/8, bf16)")
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as scratch:
        path = args.checkpoint or make_random_checkpoint(Path(scratch))
        classifier = load_classifier(path)
        config = classifier.preprocess_config
        files = photo_files(args.photos, 400) if args.photos else []
        images = [preprocess_array(open_image(p, draft_size=config.resize), config) for p in files] or \
            [np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)]
        image = images[0]
        model, _ = load_or_convert(classifier.network, "", "fp32", config.crop, None)
        threads = os.cpu_count() or 2
        engines = {
            "OV bf16 sync batched": ("bf16", OpenVINOOcclusion(model, "bf16", threads, 1, 1), "sync"),
            "OV bf16 async 1 stream x2 req": ("bf16", OpenVINOOcclusion(model, "bf16", threads, 1, 2), "async"),
            "OV bf16 async 2 streams x2 req": ("bf16", OpenVINOOcclusion(model, "bf16", threads, 2, 2), "async"),
            "OV fp32 async 1 stream x2 req": ("fp32", OpenVINOOcclusion(model, "fp32", threads, 1, 2), "async"),
        }
        incremental = OcclusionExplainer(classifier.network, 16, 8, args.batch)
        print(f"model: {path}; {threads} threads; batch {args.batch}\n")
        print(f"{'setting':>7} | {'engine':<32} | seconds | x fastest")
        for setting in args.settings.split(","):
            patch, stride = (int(v) for v in setting.split("/"))
            timings = {}
            for name, (_, engine, kind) in engines.items():
                tensor = torch.from_numpy(image)
                if kind == "sync":
                    def run(e=engine, t=tensor, p=patch, s=stride):
                        return batched_probability_grid(e, t, p, s, args.batch)
                else:
                    def run(e=engine, p=patch, s=stride):
                        return e.probability_grid(image, p, s, args.batch)
                run()  # untimed: the first passes at this shape
                timings[name] = seconds(run)
            torch.set_num_threads(threads)
            explainer = incremental.with_settings(patch, stride)
            explainer(torch.from_numpy(image))
            timings["torch fp32 incremental"] = seconds(lambda ex=explainer: ex(torch.from_numpy(image)))
            fastest = min(timings.values())
            for name, value in timings.items():
                print(f"{setting:>7} | {name:<32} | {value:7.2f} | {value / fastest:9.2f}")
        if args.adaptive:
            engine = engines["OV bf16 async 1 stream x2 req"][1]
            scores, shares, hits, times = [], [], 0, []
            for picture in images[:: max(1, len(images) // args.adaptive)][: args.adaptive]:
                clean = softmax(engine.logits(picture[None]))[0]
                target = int(clean.argmax())
                started = time.perf_counter()
                exact = clean[target] - engine.probability_grid(picture, 16, 8, args.batch)[target]
                exact_s = time.perf_counter() - started
                started = time.perf_counter()
                grid, computed = adaptive_probability_grid(
                    lambda corners, p=picture: softmax(engine.logits(occluded_copies(p, [c for c in corners], 16))),
                    list(range(0, 209, 8)), clean, target)
                times.append((time.perf_counter() - started) / exact_s)
                approx = clean[target] - grid[target]
                scores.append((ssim(exact, approx), float(np.corrcoef(exact.ravel(), approx.ravel())[0, 1])))
                shares.append(float(computed.mean()))
                hits += int(np.abs(exact).argmax() == np.abs(approx).argmax())
            s, r = np.array(scores).T
            print(f"\nadaptive 16/8 (bf16 OpenVINO) against exact on {len(scores)} photos: SSIM median {np.median(s):.3f} "
                  f"min {s.min():.3f}; correlation median {np.nanmedian(r):.3f} min {np.nanmin(r):.3f} ({int(np.isnan(r).sum())} "
                  f"flat maps without one); argmax cell same {hits}/"
                  f"{len(scores)}; positions computed {np.median(shares) * 100:.0f}% (median); time {np.median(times):.2f}x exact")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
