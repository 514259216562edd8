"""Is INT8_PROBE_TOLERANCE (model/precision_auto.py) the right threshold? int8 models of different quality, each
judged two ways in one run: what the start-up probe sees (its largest probability difference from torch fp32 on the
bot's probe batch, and on many other random probe batches), and what it does to photos (top-1 agreement with torch
fp32 on many proxy photos, the issue's bar being >= 99%).

    python bench/bench_int8_tolerance.py --checkpoint /tmp/bench28/model.pt --calibration /work/proxy/data \
        --photos /work/proxy/eval,/tmp/bench28/eval2
    python bench/bench_int8_tolerance.py --random --photos /work/proxy/eval     # random-init, random calibration

The variants are the bot's own (NNCF, 300 training photos), fewer calibration photos, and random arrays as
calibration (a poor quantization on purpose), plus bf16 for reference (its tolerance is PROBE_TOLERANCE). A good
threshold accepts the variants whose photo agreement is >= 99% and rejects those below it, with a margin both ways;
the table prints, per threshold, which variants the probe (top-1 and max difference, model.precision_rule's
compare_probabilities) would accept.
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
from model.openvino_occlusion import OpenVINOOcclusion, softmax  # noqa: E402
from model.openvino_runtime import load_or_convert  # noqa: E402
from model.precision_auto import INT8_PROBE_TOLERANCE, TOLERANCES  # noqa: E402
from model.precision_rule import compare_probabilities  # noqa: E402
from model.preprocess import open_image, preprocess_array  # noqa: E402

THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20)
AGREEMENT_BAR = 0.99


def probe_batch(seed: int, side: int, size: int = 4) -> torch.Tensor:
    """The bot's probe (model/runtime.py prepare_model: torch.randn, seed 0, 4 images) and others like it."""
    return torch.randn(size, 3, side, side, generator=torch.Generator().manual_seed(seed))


def probabilities(engine: OpenVINOOcclusion, images: np.ndarray) -> np.ndarray:
    return np.concatenate([softmax(engine.logits(np.ascontiguousarray(images[i:i + 16]))) for i in range(0, len(images), 16)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--random", action="store_true")
    parser.add_argument("--calibration", type=Path, help="training photos (the bot's calibration); none: random arrays only")
    parser.add_argument("--photos", required=True, help="comma-separated folders of photos for the agreement")
    parser.add_argument("--probes", type=int, default=40, help="random probe batches besides the bot's")
    parser.add_argument("--sizes", default="300,30,8", help="calibration photo counts, one int8 variant each")
    args = parser.parse_args()
    print_machine()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    threads = os.cpu_count() or 2
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        path = make_random_checkpoint(Path(scratch)) if args.random or args.checkpoint is None else args.checkpoint
        classifier = load_classifier(path)
        config = classifier.preprocess_config
        side = config.crop
        fp32_model, _ = load_or_convert(classifier.network, "", "fp32", side, None)
        files = [f for folder in args.photos.split(",") for f in photo_files(Path(folder), 100_000)]
        images = np.stack([preprocess_array(open_image(p, draft_size=config.resize), config) for p in files])
        probes = [probe_batch(seed, side) for seed in range(args.probes + 1)]  # seed 0: the bot's
        with torch.inference_mode():
            reference = np.concatenate([torch.softmax(classifier.network(torch.from_numpy(images[i:i + 16])), 1).numpy()
                                        for i in range(0, len(images), 16)])
            probe_refs = [torch.softmax(classifier.network(b), 1).numpy() for b in probes]
        rng = np.random.default_rng(0)
        variants: dict[str, object] = {"bf16 (reference)": None}
        if args.calibration:
            for count in (int(c) for c in args.sizes.split(",")):
                variants[f"int8, {count} training photos"] = calibration_arrays(args.calibration, config, count)
        variants["int8, 64 random arrays"] = [rng.standard_normal((3, side, side)).astype(np.float32) for _ in range(64)]
        variants["int8, 8 constant arrays"] = [np.full((3, side, side), v, dtype=np.float32) for v in np.linspace(-1, 1, 8)]
        print(f"model: {path} ({'random-init' if args.random or args.checkpoint is None else 'given'}); {len(images)} photos "
              f"from {args.photos}; probe: the bot's batch (4 random images, seed 0) and {args.probes} others")
        rows = []
        for name, calibration in variants.items():
            started = time.perf_counter()
            if calibration is None:
                engine = OpenVINOOcclusion(fp32_model, "bf16", threads)
            else:
                engine = OpenVINOOcclusion(quantize_int8(fp32_model, calibration), "int8", threads)
            made = time.perf_counter() - started
            photo_probs = probabilities(engine, images)
            same = photo_probs.argmax(1) == reference.argmax(1)
            diffs = np.abs(photo_probs - reference).max(1)
            probe_diffs, probe_top1 = [], []
            for batch, ref in zip(probes, probe_refs):
                candidate = probabilities(engine, batch.numpy())
                probe_diffs.append(float(np.abs(candidate - ref).max()))
                probe_top1.append((ref, candidate))  # top-1 as the rule counts it (ties within it excused): per threshold
            rows.append((name, same.mean(), diffs, np.array(probe_diffs), probe_top1, made))
            print(f"  {name}: made in {made:.1f} s; photos top-1 {same.mean() * 100:.2f}% ({same.sum()}/{len(same)}), "
                  f"max prob diff {diffs.max():.4f} (p99 {np.quantile(diffs, 0.99):.4f}); probe max diff: the bot's "
                  f"{probe_diffs[0]:.4f}, over {len(probe_diffs)} batches median {np.median(probe_diffs):.4f}, "
                  f"p90 {np.quantile(probe_diffs, 0.9):.4f}, max {max(probe_diffs):.4f} (load {os.getloadavg()[0]:.2f})")
        print(f"\nper threshold: the share of the {args.probes + 1} probe batches on which the rule (top-1 and max diff "
              f"<= threshold) accepts each variant; the bot's own probe batch in brackets. Photo top-1 >= "
              f"{AGREEMENT_BAR:.0%} marked *. Current: int8 {INT8_PROBE_TOLERANCE}, bf16 {TOLERANCES['bf16']}")
        print(f"{'variant':<30} | {'photos top-1':>12} | " + " | ".join(f"{t:>9.2f}" for t in THRESHOLDS))
        for name, agreement, _, _, pairs, _ in rows:
            cells = []
            for threshold in THRESHOLDS:
                verdicts = [compare_probabilities(ref, cand, threshold) for ref, cand in pairs]
                accepted = [agree and diff <= threshold for agree, diff in verdicts]
                cells.append(f"{np.mean(accepted) * 100:5.0f}% [{'y' if accepted[0] else 'n'}]")
            mark = "*" if agreement >= AGREEMENT_BAR else " "
            print(f"{name:<30} | {agreement * 100:10.2f}%{mark} | " + " | ".join(f"{c:>9}" for c in cells))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
