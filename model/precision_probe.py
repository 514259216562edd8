"""The start-up probe for ``PRECISION=auto`` and ``int8`` on a prepared runtime (:mod:`model.runtime`):
measure each candidate against the torch fp32 network, then apply :func:`model.precision_auto.choose_fastest`.

bf16 and int8 are candidates on OpenVINO only where the hardware runs them natively; int8 also needs a
quantized IR (:mod:`model.int8`: the cache, or NNCF and calibration photos). Where int8 classifies, heat maps
use the best precision of the others (:data:`model.int8.INT8_MAPS`): ``map_precision`` says which.

int8 is also checked on photos where any are here (the calibration photos, or the checkpoint's training
folder): the random-image probe cannot tell a good int8 model from a broken one. On the proxy model
(bench/bench_int8_tolerance.py, docs/benchmarks.md 2026-12-03) an int8 model calibrated on constant arrays
agreed with fp32 on 35% of 300 photos yet differed by 0.0009 at most on the random probe, which every tolerance
accepts; the good variants agreed on 99.67–100%. So ``auto`` takes int8 only where its top-1 also agrees with
fp32 on :data:`INT8_PHOTO_AGREEMENT` of up to :data:`INT8_PROBE_PHOTOS` photos. Not the probabilities: on photos
a good int8 model's largest difference was 0.19–0.40, which no useful tolerance separates from a broken one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .int8 import INT8_MAPS, Int8Unavailable
from .precision import Capability, PrecisionChoice, choose_precision, compare_outputs
from .precision_auto import TOLERANCES, CandidateProbe, choose_fastest, int8_capability

log = logging.getLogger(__name__)

INT8_PROBE_PHOTOS = 32  # about 1 s at start-up (fp32 and int8 passes); a broken model fails most of them
INT8_PHOTO_AGREEMENT = 0.95  # at 32 photos: at most one disagreement; the good variants measured 99.67-100%


@dataclass(frozen=True)
class Chosen:
    """The precision that classifies, and the one heat maps are computed in (they differ only for int8)."""

    precision: str
    reason: str
    map_precision: str


def _probe(classifier, forward, precision: str, reference: torch.Tensor, batch: torch.Tensor) -> tuple[bool, float]:
    with torch.inference_mode():
        candidate = torch.softmax(forward(batch).float(), dim=1)
    return compare_outputs(reference, candidate, TOLERANCES[precision])


def choose(requested: str, classifier, forwards, batch: torch.Tensor, workers: int, threads: int,
           bf16: Capability, int8: Capability | None = None) -> Chosen:
    """The precision for ``requested`` (``auto`` or ``int8``; others go to :func:`model.precision.choose_precision`)
    on ``forwards`` (a :class:`model.runtime._Forwards`), probing on ``batch`` as the bot serves."""
    from .runtime import _fastest  # the runtime imports this module

    if requested not in ("auto", "int8") or forwards.runtime != "openvino":
        if requested == "int8":
            log.warning("PRECISION=int8 needs the OpenVINO runtime (this serves %s): serving fp32", forwards.runtime)
            return Chosen("fp32", f"PRECISION=int8, but int8 runs on OpenVINO only and this serves {forwards.runtime}",
                          "fp32")
        choice = _bf16_choice(requested, classifier, forwards, batch, workers, threads, bf16)
        return Chosen(choice.precision, choice.reason, choice.precision)
    int8 = int8 if int8 is not None else int8_capability()
    if requested == "int8":
        try:
            forwards.get("int8")
        except Int8Unavailable as error:
            log.warning("%s: serving fp32", error)
            return Chosen("fp32", f"PRECISION=int8, but {error}", "fp32")
        note = "" if int8.native_bf16 else f" ({int8.evidence})"
        return Chosen("int8", f"PRECISION=int8{note} ({'; '.join(forwards.sources)})", _map_precision(bf16))
    with torch.inference_mode():
        reference = torch.softmax(classifier.network(batch).float(), dim=1)
    candidates, skipped = [], []
    for precision, capability in (("bf16", bf16), ("int8", int8)):
        if not capability.native_bf16:  # Capability's flag means "native" for either format
            skipped.append(f"{precision}: {capability.evidence}")
            continue
        try:
            forward = forwards.get(precision)
        except Int8Unavailable as error:
            skipped.append(f"{precision}: {error}")
            continue
        if precision == "int8":
            refusal = _int8_photo_refusal(classifier, forwards, forward)
            if refusal:
                skipped.append(f"int8: {refusal}")
                continue
        candidates.append((precision, forward, *_probe(classifier, forward, precision, reference, batch)))
    timings = _fastest([forwards.get("fp32")] + [forward for _, forward, _, _ in candidates], batch, workers, threads)
    probes = [CandidateProbe(precision, agree, difference, ms)
              for (precision, _, agree, difference), ms in zip(candidates, timings[1:])]
    chosen = choose_fastest(timings[0], probes, skipped)
    bf16_ok = any(p.precision == "bf16" and p.top1_agree and p.max_difference <= TOLERANCES["bf16"]
                  and p.ms < timings[0] for p in probes)
    map_precision = chosen.precision if chosen.precision != "int8" or INT8_MAPS else ("bf16" if bf16_ok else "fp32")
    return Chosen(chosen.precision, chosen.reason + (f"; heat maps in {map_precision}" if map_precision != chosen.precision
                                                     else ""), map_precision)


def _int8_photo_refusal(classifier, forwards, forward) -> str:
    """Why the int8 model must not classify (its top-1 on real photos disagrees with fp32's), or "" (agreed,
    or no photos here to tell: then the random-image probe alone decides, as the log says)."""
    from .int8 import calibration_arrays, training_photo_folder

    folder = forwards.calibration_dir or training_photo_folder(classifier.metadata)
    arrays = []
    if folder is not None:
        try:
            arrays = calibration_arrays(folder, classifier.preprocess_config, INT8_PROBE_PHOTOS)
        except Int8Unavailable:
            arrays = []
    if not arrays:
        log.info("int8: no photos here to check it on; the random-image probe alone decides")
        return ""
    photos = torch.from_numpy(np.stack(arrays)).to(classifier.device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = classifier.network(photos).float().argmax(1)
        got = forward(photos).float().argmax(1)
    agreement = float((expected == got).float().mean())
    log.info("int8: top-1 agrees with fp32 on %.0f%% of %d photos under %s", 100 * agreement, len(arrays), folder)
    if agreement < INT8_PHOTO_AGREEMENT:
        return (f"its top-1 agreed with fp32 on {100 * agreement:.0f}% of {len(arrays)} photos "
                f"(needs {100 * INT8_PHOTO_AGREEMENT:.0f}%)")
    return ""


def _map_precision(bf16: Capability) -> str:
    """Heat maps' precision when int8 was asked for: int8 only if :data:`INT8_MAPS`, else bf16 where native."""
    if INT8_MAPS:
        return "int8"
    return "bf16" if bf16.native_bf16 else "fp32"


def _bf16_choice(requested: str, classifier, forwards, batch, workers, threads, bf16: Capability) -> PrecisionChoice:
    from .runtime import _precision_probe

    return choose_precision(requested, bf16, lambda: _precision_probe(classifier, forwards, batch, workers, threads),
                            device=classifier.device)
