"""The start-up probe for ``PRECISION=auto`` and ``int8`` on a prepared runtime (:mod:`model.runtime`):
measure each candidate against the torch fp32 network, then apply :func:`model.precision_auto.choose_fastest`.

bf16 and int8 are candidates on OpenVINO only where the hardware runs them natively; int8 also needs a
quantized IR (:mod:`model.int8`: the cache, or NNCF and calibration photos). Where int8 classifies, heat maps
use the best precision of the others (:data:`model.int8.INT8_MAPS`): ``map_precision`` says which.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .int8 import INT8_MAPS, Int8Unavailable
from .precision import Capability, PrecisionChoice, choose_precision, compare_outputs
from .precision_auto import TOLERANCES, CandidateProbe, choose_fastest, int8_capability

log = logging.getLogger(__name__)


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


def _map_precision(bf16: Capability) -> str:
    """Heat maps' precision when int8 was asked for: int8 only if :data:`INT8_MAPS`, else bf16 where native."""
    if INT8_MAPS:
        return "int8"
    return "bf16" if bf16.native_bf16 else "fp32"


def _bf16_choice(requested: str, classifier, forwards, batch, workers, threads, bf16: Capability) -> PrecisionChoice:
    from .runtime import _precision_probe

    return choose_precision(requested, bf16, lambda: _precision_probe(classifier, forwards, batch, workers, threads),
                            device=classifier.device)
