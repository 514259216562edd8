"""Benchmark: training on the sample photos with the feature cache cold, warm, and without the cache.

Each variant runs `python -m training` in its own subprocess, so its peak memory (ru_maxrss) is its own.
Per-epoch time is the head/network update time of one epoch as recorded in the run's metrics.json; the
uncached variant runs ResNet50 on the same K augmented copies per photo every epoch, for fewer epochs (its
total for the full epoch count is extrapolated and marked so).

    python bench/bench_training.py --data images/sample            # defaults: --weights none, 60 epochs, K=10
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(argv: list[str]) -> None:
    """Run the training CLI in this process, then print its peak RSS (KiB) as the last line."""
    sys.path.insert(0, str(REPO))
    from training.__main__ import main

    code = main(argv)
    print(json.dumps({"code": code, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def run_variant(name: str, argv: list[str]) -> dict:
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, __file__, "--child", *argv], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{name} failed:\n{process.stderr[-2000:]}")
    lines = process.stdout.strip().splitlines()
    child_result = json.loads(lines[-1])
    run_dir = Path(next(line for line in lines if line.startswith("run folder:")).split()[2])
    timing = json.loads((run_dir / "metrics.json").read_text())["metrics"]["timing"]
    return {
        "variant": name,
        "wall_s": wall,
        "max_rss_mib": child_result["max_rss_kib"] / 1024,
        "features_s": timing["features_seconds"],
        "from_cache": timing["features_from_cache"],
        "epoch_ms": timing["epoch_seconds_mean"] * 1000,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "images" / "sample")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the cached runs (the default of make train)")
    parser.add_argument("--copies", "-K", type=int, default=10)
    parser.add_argument("--uncached-epochs", type=int, default=2, help="epochs actually run without the cache")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found (fetch the sample photos first, or pass --data)")

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        common = ["--data", str(args.data), "--weights", args.weights, "-K", str(args.copies), "--seed", "0"]
        cached = [*common, "--epochs", str(args.epochs), "--out", str(work / "cached" / "model.pt")]
        rows = [
            run_variant("cached, cold", cached),
            run_variant("cached, warm", cached),
            run_variant(
                "no cache",
                [*common, "--no-cache", "--epochs", str(args.uncached_epochs), "--out", str(work / "nocache" / "model.pt")],
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cold, warm, uncached = rows
    uncached_total = uncached["features_s"] + args.epochs * uncached["epoch_ms"] / 1000
    print(f"\ntraining on {args.data} (--weights {args.weights}, K={args.copies}); cached runs {args.epochs} epochs, "
          f"no-cache run {args.uncached_epochs} epochs")
    print(f"{'variant':<14} {'wall s':>8} {'peak RSS MiB':>13} {'features s':>11} {'ms/epoch':>10}")
    for row in rows:
        print(f"{row['variant']:<14} {row['wall_s']:>8.1f} {row['max_rss_mib']:>13.0f} {row['features_s']:>11.1f} {row['epoch_ms']:>10.1f}")
    print(f"per-epoch speed-up of the cache: {uncached['epoch_ms'] / max(cold['epoch_ms'], 1e-9):.0f}x (cold), "
          f"{uncached['epoch_ms'] / max(warm['epoch_ms'], 1e-9):.0f}x (warm)")
    print(f"no cache, {args.epochs} epochs (extrapolated): ~{uncached_total:.0f} s of training vs "
          f"{cold['wall_s']:.0f} s cold / {warm['wall_s']:.0f} s warm for the whole cached run")


if __name__ == "__main__":
    main()
