"""A "Why not …?" map from the cached grid against computing that class's map afresh, side by side.

    PYTHONPATH=. python bench/bench_why_not.py [--photo JPG] [--checkpoint FILE] [--settings 16/8] [--repeats 3]

Each round, interleaved: (fresh) the occlusion map explained for the runner-up class plus drawing it, what a
"Why not …?" would cost without the kept grid; (cached) ``OcclusionResult.for_target`` on the predicted class's
result plus drawing it, what the bot does; (draw) the drawing alone. Torch threads: 2. Prints the CPU, then
medians with ranges and the fresh/cached ratio; checks that both give the same map.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SEED_PHOTO, median_range, print_machine  # noqa: E402

THREADS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=SEED_PHOTO)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a random-init 3-class ResNet50")
    parser.add_argument("--settings", default="16/8", help="patch/stride of the map (default: the bot's fine map)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from bot.i18n import Languages
    from bot.inference.contract import render_explanation
    from devtools.samples import CLASS_NAMES
    from model import PreprocessConfig, build_network, load_classifier, open_image, preprocess
    from model.occlusion import OcclusionExplainer

    torch.set_num_threads(THREADS)
    print_machine()
    photo = open_image(args.photo)
    if args.checkpoint:
        classifier = load_classifier(args.checkpoint)
        network, names, config = classifier.network, classifier.class_names, classifier.preprocess_config
    else:
        torch.manual_seed(0)
        network, names, config = build_network(len(CLASS_NAMES), "none").eval(), list(CLASS_NAMES), PreprocessConfig()
    tensor = preprocess(photo, config)
    patch, stride = (int(x) for x in args.settings.split("/"))
    explainer = OcclusionExplainer(network, patch=patch, stride=stride)
    hindi = Languages().get("hi")
    result = explainer.explain(tensor)  # the /why before the button: its grid is what the cache keeps
    other = result.top_classes(2)[1]
    print(f"photo {args.photo.name}, {len(names)} classes, map {patch}/{stride} "
          f"({result.occlusion_map.shape[0]}x{result.occlusion_map.shape[1]} positions), torch threads {THREADS}; "
          f"why not {names[other]} (predicted {names[result.target]}), texts in Hindi")

    timings: dict[str, list[float]] = {"fresh": [], "cached": [], "draw": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        fresh = explainer.explain(tensor, target=other)
        render_explanation(photo, fresh, other, hindi, names, config, patch, stride)
        timings["fresh"].append(time.perf_counter() - started)

        started = time.perf_counter()
        cached = result.for_target(other)
        render_explanation(photo, result, other, hindi, names, config, patch, stride)
        timings["cached"].append(time.perf_counter() - started)

        started = time.perf_counter()
        render_explanation(photo, cached, other, hindi, names, config, patch, stride)
        timings["draw"].append(time.perf_counter() - started)
        assert np.array_equal(cached.occlusion_map, fresh.occlusion_map), "the kept grid gave another map"

    print(f"\n{'':8} {'seconds, median (range) of ' + str(args.repeats):>34}")
    for kind, values in timings.items():
        print(f"{kind:8} {median_range(values, '.3f', ' s'):>34}")
    ratios = [f / c for f, c in zip(timings["fresh"], timings["cached"])]
    print(f"\nfresh / cached: {median_range(ratios, '.1f', 'x')} (the same map: equal to the last bit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
