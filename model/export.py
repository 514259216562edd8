"""Writing the deployable model beside a checkpoint: the OpenVINO IR per precision and its manifest (the
format, the checks and the layout are in :mod:`model.export_manifest`). Needs torch (it converts the
network); serving the result does not (:mod:`model.openvino_engine`).

    python -m model export --checkpoint checkpoints/model.pt      (python -m training does it after saving)

Steps: the checkpoint is read once (its sha256 from the bytes loaded), folded and converted; each IR is
saved under a temporary name, fsynced, hashed and renamed; each is then read back the way the bot reads
it (verified bytes, compiled with the serving options) and probed against the torch fp32 network on
:data:`PROBE_IMAGES` images. An fp32 IR that disagrees with torch is not exported (ExportError); a bf16 one
that disagrees is kept with its figures, so ``PRECISION=auto`` will not choose it. The manifest comes last.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .export_manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    IRFiles,
    export_dir,
    publish_named,
    remove_unlisted,
    write_json_atomically,
)
from .incremental_export import write_plan
from .incremental_plan import UnsupportedNetwork
from .openvino_engine import CompiledForward, compile_ir
from .openvino_runtime import OV_PRECISION, OpenVINOUnavailable, _convert, openvino_version
from .precision_rule import PROBE_TOLERANCE, compare_probabilities
from .predict import classifier_from_checkpoint

PRECISIONS = ("fp32", "bf16")
PROBE_IMAGES = 8
PROBE_SEED = 0
WEIGHTS = {"fp32": "f32", "bf16": "f16"}  # bf16 inference rounds the weights further anyway; half the disk


class ExportError(RuntimeError):
    """The export could not be made (no OpenVINO, a network it cannot convert, an fp32 IR that disagrees)."""


def _save_ir(model, precision: str, folder: Path) -> dict:
    """The IR of ``precision`` in ``folder`` under its content name, fsynced; its manifest entry."""
    import openvino as ov

    temporary = folder / f".{precision}.{os.getpid()}.tmp.xml"
    ov.save_model(model, temporary, compress_to_fp16=WEIGHTS[precision] == "f16")
    entry = publish_named(folder, precision, {"bin": temporary.with_suffix(".bin"), "xml": temporary}, named_by="bin")
    return {**entry, "weights": WEIGHTS[precision], "inference_precision": OV_PRECISION[precision]}


def probe_batch(side: int, count: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, side, side), dtype=np.float32)


def _probe(forward: CompiledForward, reference: np.ndarray, batch: np.ndarray) -> dict:
    probabilities = forward.probabilities(batch)
    agree, difference = compare_probabilities(reference, probabilities)
    forward.logits(batch)  # first pass at this shape done above; now timed
    times = []
    for _ in range(3):
        started = time.perf_counter()
        forward.logits(batch)
        times.append(1000 * (time.perf_counter() - started) / len(batch))
    return {"top1_agree": agree, "max_difference": round(difference, 6), "ms_per_photo": round(min(times), 2)}


def export_checkpoint(checkpoint_path: str | Path, precisions: tuple[str, ...] = PRECISIONS, threads: int | None = None,
                      progress: Callable[[str], None] | None = None) -> Path:
    """Write the export of ``checkpoint_path`` (module docstring); the manifest's path. ``progress`` gets one
    line per step."""
    say = progress or (lambda line: None)
    version = openvino_version()
    if version is None:
        raise ExportError("OpenVINO is not installed (pip install openvino)")
    if "fp32" not in precisions:
        raise ExportError("an export always holds the fp32 IR (the reference)")
    checkpoint_path = Path(checkpoint_path)
    started = time.perf_counter()
    say(f"reading {checkpoint_path}")
    checkpoint = load_checkpoint(checkpoint_path)
    classifier = classifier_from_checkpoint(checkpoint)
    side = classifier.preprocess_config.crop
    folder = export_dir(checkpoint_path)
    folder.mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, len(os.sched_getaffinity(0)))
    say(f"converting the network to OpenVINO {version}")
    try:
        model = _convert(classifier.network, side)
    except OpenVINOUnavailable as error:
        raise ExportError(str(error)) from None
    batch = probe_batch(side)
    with torch.inference_mode():
        reference = torch.softmax(classifier.network(torch.from_numpy(batch)).float(), dim=1).numpy()
    entries, probes = {}, {}
    for precision in precisions:
        say(f"saving the {precision} IR")
        entries[precision] = _save_ir(model, precision, folder)
        files = IRFiles(precision, folder / entries[precision]["xml"], entries[precision]["xml_sha256"],
                        folder / entries[precision]["bin"], entries[precision]["bin_sha256"], OV_PRECISION[precision])
        say(f"probing the {precision} IR against torch fp32 on {len(batch)} images")
        probes[precision] = _probe(CompiledForward(compile_ir(files, threads), precision), reference, batch)
        if precision == "fp32" and not (probes[precision]["top1_agree"] and probes[precision]["max_difference"] <= PROBE_TOLERANCE):
            for key in ("xml", "bin"):
                (folder / entries[precision][key]).unlink(missing_ok=True)
            raise ExportError(f"OpenVINO's fp32 IR disagrees with torch ({probes[precision]}): not exported")
    try:
        incremental = write_plan(classifier.network, folder)
        say(f"wrote the folded incremental plan ({incremental['npz']})")
    except UnsupportedNetwork as error:  # the maps of such a network stay batched
        incremental = None
        say(f"no incremental plan: {error}")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"file": checkpoint_path.name, "sha256": checkpoint.sha256},
        "class_names": list(classifier.class_names),
        "preprocess": classifier.preprocess_config.to_dict(),
        "input": [-1, 3, side, side],
        "openvino": version,
        "ir": entries,
        "probe": {"reference": "torch fp32", "images": len(batch), "seed": PROBE_SEED, "tolerance": PROBE_TOLERANCE,
                  **probes},
    }
    if incremental is not None:
        manifest["incremental"] = incremental
    write_json_atomically(manifest, folder / MANIFEST)
    remove_unlisted(folder, manifest)
    summary = "; ".join(f"{p} top-1 {'agreed' if r['top1_agree'] else 'DISAGREED'}, max diff {r['max_difference']:.4f}, "
                        f"{r['ms_per_photo']:.1f} ms/photo" for p, r in probes.items())
    say(f"exported to {folder} in {time.perf_counter() - started:.1f} s ({summary})")
    return folder / MANIFEST
