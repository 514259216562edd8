"""Classification and heat maps on a CUDA GPU, in fp32 and (where the GPU has it) bf16.

    python bench/bench_device.py [--batches 1,8,32] [--repeats 5] [--map-settings 16/8,8/4]

Loads a random-init checkpoint the way the bot does and moves it with ``Classifier.to("cuda")`` (the same
standard ``.to(device)`` path as ``DEVICE=cuda``), then prints ms per image per batch size, and seconds per
heat map for the incremental engine and plain batched passes. Without a GPU it says so and measures
nothing. Numbers, not pass/fail.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from harness import default_photo, make_random_checkpoint, median_range, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.occlusion import OcclusionExplainer  # noqa: E402
from model.precision import bf16_capability  # noqa: E402
from model.runtime import TorchForward  # noqa: E402


def timed(forward, *args) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    forward(*args)
    torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--map-settings", default="16/8,8/4")
    args = parser.parse_args(argv)
    print_machine()
    if not torch.cuda.is_available():
        print(f"no CUDA GPU present (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
              "nothing measured. Run this on a machine with a GPU.")
        return 0
    device = torch.device("cuda")
    capability = bf16_capability(device)
    print(f"GPU: {torch.cuda.get_device_name(device)}; bf16: {capability.evidence}")
    precisions = ["fp32", "bf16"] if capability.native_bf16 else ["fp32"]
    _, photo = default_photo()
    with tempfile.TemporaryDirectory(prefix="bench-device-") as tmp:
        classifier = load_classifier(make_random_checkpoint(Path(tmp))).to(device)
        image = classifier.preprocess(classifier.open(photo))
        forwards = {"fp32": classifier.network, "bf16": TorchForward(classifier.network, torch.bfloat16)}
        print("\n== classification, ms per image: median (range) ==")
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = image.unsqueeze(0).repeat(batch, 1, 1, 1).to(device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                for precision in precisions:
                    timed(forwards[precision], inputs)
                    samples = [1000 * timed(forwards[precision], inputs) / batch for _ in range(args.repeats)]
                    print(f"batch {batch:>3} {precision}: {median_range(samples, '.2f')} ms")
        print("\n== heat maps, seconds ==")
        for setting in args.map_settings.split(","):
            patch, stride = (int(v) for v in setting.split("/"))
            for precision in precisions:
                for method in ("incremental", "batched"):
                    explainer = OcclusionExplainer(classifier.network, patch, stride, batch_size=32, method=method,
                                                   precision=precision)
                    explainer(image)  # first pass: kernel choice, memory pools
                    seconds = [timed(explainer, image) for _ in range(2)]
                    print(f"{patch}/{stride} {precision} {method:<11}: {statistics.median(seconds):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
