"""``python -m training``: train the product classifier from folders of labelled photos.

Examples::

    python -m training --data images/sample --out checkpoints/model.pt --weights none
    python -m training --data my_photos --out checkpoints/model.pt --weights imagenet --epochs 100
    python -m training --data images/sample --extra feedback/labels --out checkpoints/model.pt
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.network import WeightsError
from model.precision import DEVICES, DeviceUnavailable

from .data import DataError
from .pipeline import TrainingResult, run_training
from .settings import DEFAULTS, FEATURE_BUDGET, TrainingSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the product classifier (ResNet50 backbone + head) from labelled photo folders: "
        "DIR/train/<class>/ and DIR/test/<class>/, or DIR/<class>/ (split here).",
    )
    parser.add_argument("--data", required=True, type=Path, help="folder of labelled photos")
    parser.add_argument("--out", default=Path("checkpoints/model.pt"), type=Path, help="checkpoint to write (default: %(default)s)")
    parser.add_argument(
        "--weights", default="imagenet",
        help="backbone weights: imagenet (torchvision, cached after the first download), none (random init), "
        "or a path to a ResNet50 .pth state dict (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, help=f"epochs (default: {DEFAULTS['cached']['epochs']} on cached features, "
                        f"{DEFAULTS['images']['epochs']} on images)")
    parser.add_argument("--copies", "-K", type=int, help="augmented copies of each training photo (default: "
                        f"{DEFAULTS['cached']['copies']} cached, fewer beyond {FEATURE_BUDGET} augmented photos in all, "
                        f"at least 2; {DEFAULTS['images']['copies']} per epoch on images)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed and photos, same metrics (default: 0)")
    parser.add_argument("--unfreeze", choices=("none", "layer4"), default="none",
                        help="none: train the head on cached features (fast); layer4: also fine-tune layer4 on images")
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="frozen backbone, but run it on fresh augmented photos every epoch (slow; for comparison)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the head (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="share of each class held out for testing with the DIR/<class>/ layout (default: %(default)s)")
    parser.add_argument("--extra", type=Path, action="append", default=[],
                        help="more labelled photos as <class>/ folders, added to training (repeatable); "
                        "folders that are not classes (e.g. none_of_these) are ignored")
    parser.add_argument("--cache-dir", type=Path, help="feature cache folder (default: <out folder>/cache)")
    parser.add_argument("--runs-dir", type=Path, help="where run folders go (default: <out folder>/runs)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="cpu, cuda, or auto: CUDA when torch sees a GPU (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="the frozen backbone's feature extraction: bf16 is faster on CPUs with AMX or AVX-512 BF16 "
                        "and GPUs, but its features (and so the metrics) differ slightly from fp32's; the feature cache "
                        "is kept per precision (default: %(default)s)")
    parser.add_argument("--no-export", dest="export", action="store_false",
                        help="do not write the OpenVINO export beside the checkpoint (the bot then converts the "
                        "checkpoint with torch at its first start; python -m model export writes it later)")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    return TrainingSettings(
        data=args.data,
        out=args.out,
        weights=args.weights,
        epochs=args.epochs,
        copies=args.copies,
        seed=args.seed,
        unfreeze=args.unfreeze,
        cache=args.cache,
        lr=args.lr,
        batch_size=args.batch_size,
        test_fraction=args.test_fraction,
        extra=tuple(args.extra),
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        device=args.device,
        precision=args.precision,
    )


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "copies", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must be between 0 and 1")
    if args.lr <= 0:
        parser.error("--lr must be positive")


def summary(result: TrainingResult) -> str:
    metrics = result.metrics
    lines = [
        f"checkpoint:  {result.checkpoint}",
        f"run folder:  {result.run_dir}  (metrics.json, confusion_matrix.png, curves.png, augmentation_preview.png)",
        f"test accuracy: {metrics['test_accuracy']:.1%} on {sum(map(sum, metrics['confusion_matrix']))} photos",
        f"{'class':<16} {'precision':>9} {'recall':>7} {'photos':>7}",
    ]
    for name, scores in metrics["per_class"].items():
        lines.append(f"{name:<16} {scores['precision']:>9.2f} {scores['recall']:>7.2f} {scores['support']:>7}")
    if metrics["misclassified"]:
        lines.append("misclassified:")
        lines += [f"  {m['file']}: {m['true']} taken for {m['predicted']} ({m['confidence']:.0%})" for m in metrics["misclassified"]]
    timing = metrics["timing"]
    if timing.get("mode") == "images":
        source = "feature statistics"
    else:
        source = "features from cache" if timing["features_from_cache"] else "features computed"
    lines.append(f"time: {timing['total_seconds']:.1f} s ({source} {timing['features_seconds']:.1f} s, "
                 f"{timing['epoch_seconds_mean'] * 1000:.1f} ms per epoch)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_numbers(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        result = run_training(settings_from_args(args))
    except (DataError, WeightsError, DeviceUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    if args.export:
        export_beside(result.checkpoint)
    return 0


def export_beside(checkpoint: Path) -> None:
    """The deployable model beside the checkpoint (model/export.py): what a bot without torch serves. A failed
    export is a warning, not a failed training: the bot converts the checkpoint with torch instead."""
    from model.export import ExportError, export_checkpoint

    try:
        manifest = export_checkpoint(checkpoint, progress=lambda line: print(f"export: {line}", file=sys.stderr))
    except ExportError as exc:
        print(f"warning: no OpenVINO export written ({exc}); python -m model export --checkpoint {checkpoint} retries",
              file=sys.stderr)
        return
    print(f"export:      {manifest.parent}  (the OpenVINO IR the bot serves without torch)")


if __name__ == "__main__":
    sys.exit(main())
