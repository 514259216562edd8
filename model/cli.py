"""Command line for the model: classify photos, or explain one with an occlusion heat map.

    python -m model predict --checkpoint FILE [--json] [--top K] [--precision P] [--device D] [--runtime R] IMAGE...
    python -m model explain --checkpoint FILE IMAGE -o OUT.png [--patch P] [--stride S] [--target CLASS]
                            [--save-map MAP.npy] [--precision P] [--device D] [--runtime R]
    python -m model export --checkpoint FILE [--precisions fp32,bf16]   (the OpenVINO IR + manifest beside FILE)
    python -m model serve --checkpoint FILE [--join ADDRESS] [--classify-replicas N] [--explain-replicas N]
                          [--device auto|cpu|cuda] [--precision auto|fp32|bf16]   (needs the cluster extra)

``--precision``, ``--device`` and ``--runtime`` mean what the bot's PRECISION, DEVICE and RUNTIME mean
(:mod:`model.runtime`); the choice and its reason go to stderr, results to stdout as before.

Exit status: 0 when every image was handled, 1 when some failed, 2 on bad usage (or an unusable checkpoint,
or a device that is not there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .choices import DEVICES, PRECISIONS, RUNTIMES
from .errors import CheckpointError, ImageError
from .preprocess import open_image
from .threads import configure_torch_threads

if TYPE_CHECKING:
    from .predict import Classifier


def _load(args: argparse.Namespace) -> Classifier:
    """The checkpoint, loaded and prepared per --precision/--device/--runtime (exit 2 when unusable)."""
    # here, not at the top: `serve` runs no model in this process, and needs no torch
    from .precision import DeviceUnavailable
    from .predict import load_classifier
    from .runtime import prepare_model, runtime_cache_dir

    try:
        classifier = load_classifier(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        # One image at a time from one thread, eager (a graph's tracing would cost more than it saves here).
        preparation = prepare_model(classifier, False, probe_batch=1, workers=1, threads=args.threads_used,
                                    precision=args.precision, device=args.device, runtime=args.runtime,
                                    cache_dir=runtime_cache_dir(classifier))
    except DeviceUnavailable as exc:
        print(f"error: --device {args.device}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"model: {preparation.runtime} {preparation.precision} on {preparation.device} "
          f"(runtime: {preparation.runtime_reason}; precision: {preparation.precision_reason})", file=sys.stderr)
    return classifier


def _format_percent(confidence: float) -> str:
    return f"{confidence * 100:.1f}%"


def cmd_predict(args: argparse.Namespace) -> int:
    classifier = _load(args)
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
    classifier = _load(args)
    if args.target is not None and args.target not in classifier.class_names:
        print(f"error: --target {args.target!r} is not a class of this checkpoint; it knows: "
              f"{', '.join(classifier.class_names)}", file=sys.stderr)
        return 2
    try:
        tensor = classifier.preprocess(classifier.open(Path(args.image)))
        # The model sees a reduced decode; the picture is drawn on the full-resolution photo.
        photo = open_image(Path(args.image), decode_budget=None)  # a local file, drawn at full size
    except ImageError as exc:
        print(f"{args.image}: error: {exc}", file=sys.stderr)
        return 1
    prediction = classifier.predict_tensors([tensor])[0]
    explainer = OcclusionExplainer.for_classifier(classifier, args.patch, args.stride, args.batch_size)
    label = args.target or prediction.label
    target = classifier.class_names.index(label)
    with tqdm(total=None, unit="position", desc="occlusion", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as progress:
        def advance(done: int, total: int) -> None:
            progress.total = total
            progress.update(done - progress.n)

        result = explainer.explain(tensor, target=target, between_batches=advance)
    png = render_overlay(
        photo,
        result.occlusion_map,
        label,
        result.probability,
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
        + (f"map for {label} ({_format_percent(result.probability)}); " if label != prediction.label else "")
        + f"heat map {result.occlusion_map.shape[0]}x{result.occlusion_map.shape[1]} written to {args.output}"
        + (f", grid to {args.save_map}" if args.save_map else "")
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import PRECISIONS, ExportError, export_checkpoint

    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or "fp32" not in precisions:
        print(f"error: --precisions takes {', '.join(PRECISIONS)}, fp32 included (got {args.precisions!r})", file=sys.stderr)
        return 2
    try:
        manifest = export_checkpoint(args.checkpoint, precisions, threads=args.threads_used,
                                     progress=lambda line: print(f"export: {line}", file=sys.stderr, flush=True))
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


def _add_model_choices(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="fp32, bf16, or auto: bf16 where the hardware runs it natively and a probe agrees (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="cpu, cuda, or auto: CUDA when torch sees a GPU (default: %(default)s)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="torch, openvino, or auto: OpenVINO on a CPU where installed and faster (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Classify clothing photos and explain the answer.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="print the product name and confidence of each image")
    predict.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (e.g. checkpoints/model.pt)")
    predict.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image (default: %(default)s)")
    _add_model_choices(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(func=cmd_predict)

    explain = sub.add_parser("explain", help="draw an occlusion heat map of why the model chose its answer")
    explain.add_argument("--checkpoint", type=Path, required=True)
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    explain.add_argument("--patch", type=int, default=16, help="occluding patch size in pixels (default: %(default)s)")
    explain.add_argument("--stride", type=int, default=8, help="step between patch positions (default: %(default)s)")
    explain.add_argument("--batch-size", type=int, default=16, help="patch positions per forward pass")
    explain.add_argument("--target", default=None, metavar="CLASS",
                         help="explain this class instead of the predicted one (a class name of the checkpoint)")
    explain.add_argument("--save-map", type=Path, default=None, metavar="MAP.npy", help="also save the grid as float32 .npy")
    _add_model_choices(explain)
    explain.set_defaults(func=cmd_explain)

    export = sub.add_parser("export", help="write the OpenVINO IR and its manifest beside the checkpoint: "
                                           "what a bot without torch serves (model/export.py)")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--precisions", default="fp32,bf16", help="IRs to write, comma-separated (default: %(default)s)")
    export.set_defaults(func=cmd_export)

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
        args.threads_used = configure_torch_threads(args.threads)
    return args.func(args)
