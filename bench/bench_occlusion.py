"""Occlusion maps, side by side: naive loop, batched whole network, captum's Occlusion, incremental.

    PYTHONPATH=. python bench/bench_occlusion.py [--photo JPG] [--checkpoint FILE] [--settings 32/16,16/8,8/4]

Every measurement runs in a fresh spawned process (so its peak resident memory can be read) with
torch threads set to 2, one after the other in one run, so the ratios are comparable even on a shared
machine. Naive at settings with more than --naive-limit positions is timed on an evenly spread subset
and extrapolated (and said so); its map is then compared on that subset only, and captum's per-pixel
attribution with ours averaged the same way (marked px*).
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

DEFAULT_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "seed" / "test" / "saree" / "saree1.jpeg"
THREADS = 2


def _setup(photo: str, checkpoint: str | None):
    import torch

    torch.set_num_threads(THREADS)
    from model import build_network, load_classifier, open_image, preprocess

    if checkpoint:
        classifier = load_classifier(checkpoint)
        return classifier.network, classifier.preprocess(open_image(photo))
    torch.manual_seed(0)
    return build_network(3, "none").eval(), preprocess(open_image(photo))


def _task(kind: str, photo: str, checkpoint: str | None, patch: int, stride: int, batch: int, positions=None):
    """Runs in a child process: returns seconds, the map (or sampled drops), peak RSS in MiB, profile."""
    import torch

    from model.incremental import IncrementalOcclusion
    from model.occlusion import (
        INCREMENTAL_BATCH_FACTOR,
        OcclusionExplainer,
        batched_occlusion_map,
        grid_positions,
        occluded_batch,
    )

    network, image = _setup(photo, checkpoint)
    with torch.inference_mode():
        clean = torch.softmax(network(image.unsqueeze(0)), dim=1)[0]
    target, probability = int(clean.argmax()), float(clean.max())
    extra = {}
    started = time.perf_counter()
    if kind == "baseline":
        result = None
    elif kind == "naive":  # batch 1, on the given (row, col) subset
        starts = grid_positions(224, patch, stride)
        drops = []
        with torch.inference_mode():
            for row, col in positions:
                occluded = occluded_batch(image, [(starts[row], starts[col])], patch)
                drops.append(probability - float(torch.softmax(network(occluded), dim=1)[0, target]))
        result = np.array(drops, dtype=np.float32)
    elif kind == "batched":
        result = batched_occlusion_map(network, image, target, patch, stride, batch, probability)
    elif kind == "captum":
        from captum.attr import Occlusion

        model = lambda batch_: torch.softmax(network(batch_), dim=1)  # noqa: E731
        result = Occlusion(model).attribute(
            image.unsqueeze(0), sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=0,
            target=target, perturbations_per_eval=batch)[0, 0].numpy()
    elif kind == "incremental":
        explainer = OcclusionExplainer(network, patch=patch, stride=stride, batch_size=batch, method="incremental")
        result = explainer.explain(image, target).occlusion_map
        extra["profile"] = dict(explainer._engine.profile)
        prepared = IncrementalOcclusion(network).prepare(image, patch, stride)
        extra["macs"] = prepared.multiply_adds(prepared.batches(batch * INCREMENTAL_BATCH_FACTOR))
    else:
        raise ValueError(kind)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return seconds, result, peak_mib, extra


def run(pool_context, *args, **kwargs):
    with pool_context.Pool(1) as pool:
        return pool.apply(_task, args, kwargs)


def per_pixel_average(occlusion_map: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """What captum reports: each pixel's mean drop over the windows covering it."""
    total, count = np.zeros((224, 224)), np.zeros((224, 224))
    for row in range(occlusion_map.shape[0]):
        for col in range(occlusion_map.shape[1]):
            total[row * stride : row * stride + patch, col * stride : col * stride + patch] += occlusion_map[row, col]
            count[row * stride : row * stride + patch, col * stride : col * stride + patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default=str(DEFAULT_PHOTO))
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: random-init ResNet50)")
    parser.add_argument("--settings", default="32/16,16/8,8/4", help="patch/stride list")
    parser.add_argument("--methods", default="naive,batched,captum,incremental")
    parser.add_argument("--batch", type=int, default=16, help="positions per pass (batched, captum's perturbations_per_eval)")
    parser.add_argument("--incremental-batch", type=int, default=16, help="the explainer's batch_size (x3 inside)")
    parser.add_argument("--naive-limit", type=int, default=800, help="above this many positions, naive is sampled")
    parser.add_argument("--naive-sample", type=int, default=100)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    methods = args.methods.split(",")
    common = (args.photo, args.checkpoint)
    _, _, baseline_mib, _ = run(context, "baseline", *common, 16, 8, 1)
    print(f"photo {args.photo}; torch threads {THREADS}; baseline process (model + clean pass) {baseline_mib:.0f} MiB")
    rows = []
    for setting in args.settings.split(","):
        patch, stride = (int(v) for v in setting.split("/"))
        count = (224 - patch) // stride + 1
        grid = [(r, c) for r in range(count) for c in range(count)]
        sampled = len(grid) > args.naive_limit
        subset = [grid[i] for i in np.linspace(0, len(grid) - 1, args.naive_sample).round().astype(int)] if sampled else grid
        results = {}
        for method in methods:
            if method == "naive":  # measured first so that its subset is known to the others
                seconds, drops, peak, extra = run(context, "naive", *common, patch, stride, 1, positions=subset)
                seconds *= len(grid) / len(subset)
            else:
                batch = args.incremental_batch if method == "incremental" else args.batch
                seconds, drops, peak, extra = run(context, method, *common, patch, stride, batch)
            results[method] = (seconds, drops, peak - baseline_mib, extra)
        naive = results.get("naive", (None, None))[1]
        reference_time = results.get("captum", results.get("batched"))[0]
        print(f"\n== patch {patch}, stride {stride}: {count}x{count} = {len(grid)} positions ==")
        print(f"{'method':<12}{'seconds':>10}{'x naive':>9}{'x captum':>10}{'max|diff| to naive':>20}{'extra peak MiB':>16}")
        for method, (seconds, drops, extra_mib, _extra) in results.items():
            if naive is None or method == "naive":
                diff = "-"
            elif method == "captum":  # per pixel: compare with a map averaged the way captum does
                if not sampled:
                    diff = f"{np.abs(per_pixel_average(naive.reshape(count, count), patch, stride) - drops).max():.2e} px"
                elif "incremental" in results:  # no full naive map: compare with ours, itself checked above
                    ours = results["incremental"][1]
                    diff = f"{np.abs(per_pixel_average(ours, patch, stride) - drops).max():.2e} px*"
                else:
                    diff = "n/a (sampled)"
            else:
                mine = np.array([drops[r, c] for r, c in subset])
                diff = f"{np.abs(mine - naive).max():.2e}"
            note = f" (extrapolated from {len(subset)} positions)" if method == "naive" and sampled else ""
            naive_seconds = results["naive"][0] if "naive" in results else float("nan")
            print(f"{method:<12}{seconds:>10.2f}{naive_seconds / seconds:>9.1f}{reference_time / seconds:>10.2f}"
                  f"{diff:>20}{extra_mib:>16.0f}{note}")
            rows.append((setting, method, seconds))
        if "incremental" in results:
            extra = results["incremental"][3]
            batched_macs, exact_macs, full = extra["macs"]
            total = sum(extra["profile"].values())
            stages = ", ".join(f"{k} {v / total:.0%}" for k, v in extra["profile"].items())
            print(f"incremental: conv multiply-adds per position {batched_macs / 1e9:.2f} G as batched "
                  f"({full / batched_macs:.2f}x fewer than {full / 1e9:.2f} G; each position's exact reach: "
                  f"{exact_macs / 1e9:.2f} G, {full / exact_macs:.2f}x); time by stage: {stages}")


if __name__ == "__main__":
    main()
