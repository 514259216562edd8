"""Command line for the model: classify photos, or explain one with an occlusion heat map.

    python -m model predict --checkpoint FILE [--json] [--top K] IMAGE...
    python -m model explain --checkpoint FILE IMAGE -o OUT.png [--patch P] [--stride S] [--save-map MAP.npy]
    python -m model serve --checkpoint FILE [--join ADDRESS] [--classify-replicas N] [--explain-replicas N]
                          [--device auto|cpu|cuda] [--precision auto|fp32|bf16]   (needs the cluster extra)

Exit status: 0 when every image was handled, 1 when some failed, 2 on bad usage (or an unusable checkpoint).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import CheckpointError, ImageError
from .preprocess import open_image
from .threads import configure_torch_threads

if TYPE_CHECKING:
    from .predict import Classifier


def _load(path: Path) -> Classifier:
    from .predict import load_classifier  # here: `serve` runs no model in this process, and needs no torch

    try:
        return load_classifier(path)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _format_percent(confidence: float) -> str:
    return f"{confidence * 100:.1f}%"


def cmd_predict(args: argparse.Namespace) -> int:
    classifier = _load(args.checkpoint)
    results: list[dict] = []
    for name in args.images:
        # One image at a time: a bad file fails alone and memory stays bounded by the decode limit.
        try:
            image = classifier.open(Path(name))
            prediction = classifier.predict_image(image, top_k=args.top)
        except ImageError as exc:
            results.append({"file": name, "error": str(exc)})
            if not args.json:
                print(f"{name}: error: {exc}", file=sys.stderr)
            continue
        results.append({"file": name, **prediction.to_dict()})
        if not args.json:
            others = ", ".join(f"{label} {_format_percent(conf)}" for label, conf in prediction.top[1:])
            line = f"{name}: {prediction.label} ({_format_percent(prediction.confidence)})"
            print(line + (f"  [then: {others}]" if others else ""))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if any("error" in r for r in results) else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .occlusion import OcclusionExplainer
    from .render import render_overlay

    if args.patch < 1 or args.stride < 1 or args.patch > 224:
        print("error: --patch must be 1..224 and --stride at least 1", file=sys.stderr)
        return 2
    classifier = _load(args.checkpoint)
    try:
        tensor = classifier.preprocess(classifier.open(Path(args.image)))
        # The model sees a reduced decode; the picture is drawn on the full-resolution photo.
        photo = open_image(Path(args.image))
    except ImageError as exc:
        print(f"{args.image}: error: {exc}", file=sys.stderr)
        return 1
    prediction = classifier.predict_tensors([tensor])[0]
    explainer = OcclusionExplainer(classifier.network, patch=args.patch, stride=args.stride, batch_size=args.batch_size)
    target = classifier.class_names.index(prediction.label)
    with tqdm(total=None, unit="position", desc="occlusion", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as progress:
        def advance(done: int, total: int) -> None:
            progress.total = total
            progress.update(done - progress.n)

        result = explainer.explain(tensor, target=target, between_batches=advance)
    png = render_overlay(
        photo,
        result.occlusion_map,
        prediction.label,
        prediction.confidence,
        preprocess_config=classifier.preprocess_config,
        patch=args.patch,
        stride=args.stride,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(png)
    if args.save_map:
        np.save(args.save_map, result.occlusion_map.astype(np.float32))
    print(
        f"{args.image}: {prediction.label} ({_format_percent(prediction.confidence)}); "
        f"heat map {result.occlusion_map.shape[0]}x{result.occlusion_map.shape[1]} written to {args.output}"
        + (f", grid to {args.save_map}" if args.save_map else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Classify clothing photos and explain the answer.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="print the product name and confidence of each image")
    predict.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (e.g. checkpoints/model.pt)")
    predict.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image (default: %(default)s)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(func=cmd_predict)

    explain = sub.add_parser("explain", help="draw an occlusion heat map of why the model chose its answer")
    explain.add_argument("--checkpoint", type=Path, required=True)
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    explain.add_argument("--patch", type=int, default=16, help="occluding patch size in pixels (default: %(default)s)")
    explain.add_argument("--stride", type=int, default=8, help="step between patch positions (default: %(default)s)")
    explain.add_argument("--batch-size", type=int, default=16, help="patch positions per forward pass")
    explain.add_argument("--save-map", type=Path, default=None, metavar="MAP.npy", help="also save the grid as float32 .npy")
    explain.set_defaults(func=cmd_explain)

    serve = sub.add_parser("serve", help="serve the model on a Ray Serve cluster (pip install -e '.[cluster]'); "
                                         "docs/scaling.md")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from .serve.cluster import add_arguments  # no Ray here: it is imported only when serving

    add_arguments(parser)


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("error: serving on a cluster needs Ray: pip install -e '.[cluster]'", file=sys.stderr)
        return 2
    from .serve.cluster import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "top", 1) < 1:
        parser.error("--top must be at least 1")
    if args.command != "serve":  # replicas set their own threads; the serving process runs no model
        configure_torch_threads(args.threads)
    return args.func(args)
