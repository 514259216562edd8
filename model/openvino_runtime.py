"""The classification forward pass on OpenVINO (``RUNTIME=openvino``, or ``auto`` where it is installed).

Why: on the CPUs this runs on, OpenVINO's CPU plugin ran our ResNet50 at about 1.1x the fp32 and 1.2x the
bf16 matmul floor, torch eager at 1.3x and 2-3x (README, docs/benchmarks.md). torch stays the fallback and
the reference: the probe in :mod:`model.runtime` checks OpenVINO's answers against the torch network's.

The network is converted once (``openvino.convert_model`` of the folded torch module, batch left dynamic)
and kept as OpenVINO IR (``.xml`` graph + ``.bin`` weights: data, no code) in a cache folder, under a key
of everything the IR depends on (:func:`cache_key`); later starts read it back in a fraction of a second.
bf16's IR stores the weights as fp16 (half the disk, and bf16 inference rounds them further anyway); fp32's
keeps them exact, so the key includes the precision.

Integrity (each start serves what was converted, or converts again): ``_save`` fsyncs the IR and writes a
sidecar ``{key}.json`` with the sha256 of the ``.xml`` and ``.bin``; a cached IR is read once into memory,
its bytes checked against the sidecar and compiled from those bytes (a file without a sidecar, or one that
does not match, is converted again). The checkpoint's sha256 in the key comes from the bytes torch loaded
(:func:`model.checkpoint.read_checkpoint`). A converted fp32 model serves only after it agrees with the torch
network on a probe batch (:func:`check_agreement`, run by :mod:`model.runtime`).

A checkpoint with an export beside it (:mod:`model.export`) does not come here at all: the OpenVINO engine
serves the export without torch (:mod:`model.engines`).

Threads: one compiled model per precision, compiled for ``threads`` CPU threads and one stream (the
latency hint): a batch runs on all cores, as a lone torch batch does. Each calling thread gets its own
infer request (requests are not shareable between threads); ``infer`` releases the GIL while it runs,
so the scheduler's compute threads may call it side by side, and OpenVINO queues their requests on its
stream. OpenVINO's own threads are not torch's: ``torch.set_num_threads`` does not touch them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CACHE_FORMAT = "openvino-ir-v1"
CACHE_KEEP = 4  # converted models kept in a cache folder (older checkpoints' are removed)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: what its unquantized ops run in (model/int8.py)


class OpenVINOUnavailable(RuntimeError):
    """``RUNTIME=openvino`` but the package is missing, or it cannot convert this network."""


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def cache_key(checkpoint_id: str, precision: str, side: int, version: str) -> str:
    """Everything the stored IR depends on: the checkpoint's sha256, the precision (how the weights are
    stored), OpenVINO's version and the input shape (N x 3 x side x side, N dynamic)."""
    text = f"{CACHE_FORMAT};checkpoint={checkpoint_id};precision={precision};openvino={version};input=?x3x{side}x{side}"
    return hashlib.sha256(text.encode()).hexdigest()


def _convert(network: torch.nn.Module, side: int):
    import openvino as ov

    example = torch.zeros(1, 3, side, side)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter traces with torch.jit, deprecated (see model/graph.py)
            return ov.convert_model(network, example_input=example, input=[(-1, 3, side, side)])
    except Exception as error:  # a network the converter does not understand: torch serves instead
        raise OpenVINOUnavailable(f"OpenVINO could not convert the network ({type(error).__name__}: {error})") from error


def _save(model, precision: str, folder: Path, key: str) -> None:
    """Write the IR atomically (temporary names, fsync, then renames; the sidecar of hashes last, so a reader
    never takes half a conversion, or another's, for this one)."""
    import openvino as ov

    from .export_manifest import file_sha256, fsync_file, write_json_atomically

    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.xml"
    ov.save_model(model, temporary, compress_to_fp16=precision == "bf16")
    for path in (temporary, temporary.with_suffix(".bin")):
        fsync_file(path)
    hashes = {"format": CACHE_FORMAT, "xml_sha256": file_sha256(temporary),
              "bin_sha256": file_sha256(temporary.with_suffix(".bin")), "precision": precision}
    os.replace(temporary.with_suffix(".bin"), folder / f"{key}.bin")
    os.replace(temporary, folder / f"{key}.xml")
    write_json_atomically(hashes, folder / f"{key}.json")
    kept = sorted(folder.glob("*.xml"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in kept[CACHE_KEEP * 2:]:  # two precisions per checkpoint
        for path in (old, old.with_suffix(".bin"), old.with_suffix(".json")):
            path.unlink(missing_ok=True)


def _read_cached(xml: Path):
    """The cached IR at ``xml``, compiled from bytes that match its sidecar; ValueError/OSError otherwise."""
    import openvino as ov

    from .export_manifest import ExportUnusable, read_verified

    hashes = json.loads(xml.with_suffix(".json").read_text(encoding="utf-8"))
    try:
        graph = read_verified(xml, str(hashes["xml_sha256"]))
        weights = read_verified(xml.with_suffix(".bin"), str(hashes["bin_sha256"]))
    except ExportUnusable as error:
        raise ValueError(str(error)) from None
    return ov.Core().read_model(graph.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))


def load_or_convert(network: torch.nn.Module, checkpoint_id: str, precision: str, side: int,
                    cache_dir: Path | None) -> tuple[object, str]:
    """The OpenVINO model of ``network`` and where it came from ("cache", "converted", "converted, not cached")."""
    version = openvino_version()
    if version is None:
        raise OpenVINOUnavailable("OpenVINO is not installed (pip install openvino)")
    key = cache_key(checkpoint_id, precision, side, version)
    if cache_dir is not None and checkpoint_id:
        xml = Path(cache_dir) / f"{key}.xml"
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            try:
                return _read_cached(xml), f"cache {xml}"
            except Exception as error:  # a damaged, unverifiable or modified cache is only a cache: convert again
                log.warning("OpenVINO cache %s not used (%s): converting again", xml, error)
    model = _convert(network, side)
    if cache_dir is None or not checkpoint_id:
        return model, "converted, not cached"
    xml = Path(cache_dir) / f"{key}.xml"
    try:
        _save(model, precision, Path(cache_dir), key)
    except OSError as error:
        log.warning("could not cache the OpenVINO model in %s (%s): converting at every start", cache_dir, error)
        return model, "converted, not cached"
    # Served from what was stored (bf16's weights rounded to fp16), so this start and the next run the same model.
    return _read_cached(xml), f"converted into {xml}"


class OpenVINOForward:
    """``forward(batch) -> logits`` (float32 torch tensor) on an OpenVINO model compiled for the CPU."""

    def __init__(self, model, precision: str, threads: int):
        import openvino as ov

        self.precision, self.threads = precision, threads
        self.model = model  # kept for the heat maps' own compiled model (model/openvino_occlusion.py)
        self.compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": max(1, threads),
            "PERFORMANCE_HINT": "LATENCY",
        })
        self._local = threading.local()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        inputs = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        request.infer({0: inputs})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


def check_agreement(forward, network: torch.nn.Module, side: int, images: int = 2) -> None:
    """Raise :class:`OpenVINOUnavailable` unless ``forward`` (an fp32 OpenVINO model) agrees with the torch
    ``network`` on ``images`` random images: the same top-1 and probabilities within the probe's tolerance."""
    from .precision_rule import PROBE_TOLERANCE, compare_probabilities

    batch = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = torch.softmax(network(batch).float(), dim=1).numpy()
        candidate = torch.softmax(forward(batch).float(), dim=1).numpy()
    agree, difference = compare_probabilities(reference, candidate)
    if not agree or difference > PROBE_TOLERANCE:
        raise OpenVINOUnavailable(f"the converted OpenVINO model disagrees with torch (top-1 {'agreed' if agree else 'differed'}, "
                                  f"max prob diff {difference:.4f}): not served")
