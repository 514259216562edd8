"""The rule that picks fp32 or bf16, as plain logic over measurements: no torch, so the OpenVINO engine on an
export (:mod:`model.openvino_engine`) applies the same rule as the torch runtime without loading torch.

bf16 halves the bytes and, on hardware with bf16 matrix units, runs several times faster than fp32
(docs/benchmarks.md: about 6x for the matmul floor on a Xeon with AMX). Without such units it is emulated
and slower than fp32. So ``PRECISION=auto`` uses bf16 only when all three hold:

1. the device executes bf16 natively: AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``) among the CPU's
   flags (/proc/cpuinfo), or a CUDA GPU for which torch reports bf16 support (:mod:`model.precision`);
2. a probe on a few images agrees with fp32 (:func:`compare_probabilities`): the same top-1 class, and no
   probability further than :data:`PROBE_TOLERANCE` from fp32's;
3. the same probe shows bf16 faster than fp32 here (below :data:`BF16_MUST_BE_FASTER` of its time).

Otherwise fp32. The capability is an argument of :func:`choose_precision`, so a test or a caller can state
"no native bf16". :mod:`model.precision` re-exports all of this beside its torch parts (devices, dtypes).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .choices import PRECISIONS

PROBE_TOLERANCE = 0.02  # largest |P_bf16 - P_fp32| accepted on the probe images
BF16_MUST_BE_FASTER = 0.95  # bf16 is kept only below this fraction of fp32's time (noise margin)
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def checked_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    value = str(value).strip().lower()
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def check_precision(requested: str) -> str:
    """``requested`` lower-cased if it is one of :data:`PRECISIONS`, else a ValueError saying what is allowed."""
    return checked_choice(requested, PRECISIONS, "precision")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@dataclass(frozen=True)
class Capability:
    """Whether ``device`` runs bf16 natively, and the evidence in words."""

    native_bf16: bool
    evidence: str


def flag_capability(wanted: Iterable[str], flags: Iterable[str] | None, missing: str) -> Capability:
    """Native when the CPU has any of ``wanted`` (``flags``: default /proc/cpuinfo's), with the evidence;
    else not, with ``missing`` as the reason."""
    have = frozenset(cpu_flags() if flags is None else flags)
    present = [flag for flag in wanted if flag in have]
    if present:
        return Capability(True, f"the CPU has {' and '.join(present)}")
    return Capability(False, missing)


def cpu_bf16_capability(flags: Iterable[str] | None = None) -> Capability:
    """The CPU's bf16 capability from its flags (default: /proc/cpuinfo's)."""
    return flag_capability(NATIVE_BF16_CPU_FLAGS, flags,
                           "the CPU has neither AMX nor AVX-512 BF16 (bf16 would be emulated, slower than fp32)")


@dataclass(frozen=True)
class ProbeResult:
    """fp32 against bf16 on the same probe images, timed the way they will serve."""

    top1_agree: bool
    max_difference: float  # largest |P_bf16 - P_fp32| over the images and classes
    fp32_ms: float  # per image
    bf16_ms: float

    def describe(self) -> str:
        return (f"probe: top-1 {'agreed' if self.top1_agree else 'DISAGREED'}, max prob diff {self.max_difference:.4f}, "
                f"fp32 {self.fp32_ms:.1f} ms/photo, bf16 {self.bf16_ms:.1f} ms/photo")


def compare_probabilities(reference: np.ndarray, candidate: np.ndarray, tolerance: float = PROBE_TOLERANCE) -> tuple[bool, float]:
    """(top-1 agrees, max |difference|) of two N x classes probability arrays. An image whose two most likely
    fp32 classes are within ``tolerance`` of each other has no meaningful top-1, so a swap there is not a
    disagreement (its probabilities are still held to ``tolerance``)."""
    reference, candidate = np.asarray(reference, dtype=np.float32), np.asarray(candidate, dtype=np.float32)
    difference = float(np.abs(reference - candidate).max())
    if reference.shape[1] > 1:
        top = -np.sort(-reference, axis=1)[:, :2]
        decided = (top[:, 0] - top[:, 1]) > tolerance
    else:
        decided = np.ones(len(reference), dtype=bool)
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    return bool((same | ~decided).all()), difference


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str
    native_bf16: bool = False
    probe: ProbeResult | None = None


def choose_precision(requested: str, capability: Capability, probe: Callable[[], ProbeResult] | None = None,
                     tolerance: float = PROBE_TOLERANCE) -> PrecisionChoice:
    """The precision to serve with. ``fp32``/``bf16`` are taken as asked (bf16 without native support is
    allowed, and said to be slow); ``auto`` applies the module's rule, running ``probe`` only when the
    capability is there; no probe: fp32."""
    requested = check_precision(requested)
    native = capability.native_bf16
    if requested == "fp32":
        return PrecisionChoice("fp32", "PRECISION=fp32", native)
    if requested == "bf16":
        note = "" if native else f" ({capability.evidence}: expect it slower than fp32)"
        return PrecisionChoice("bf16", "PRECISION=bf16" + note, native)
    if not native:
        return PrecisionChoice("fp32", f"auto: {capability.evidence}", native)
    if probe is None:
        return PrecisionChoice("fp32", f"auto: {capability.evidence}, but no probe could run", native)
    result = probe()
    if not result.top1_agree or result.max_difference > tolerance:
        return PrecisionChoice("fp32", f"auto: {capability.evidence}, but bf16 disagreed with fp32 ({result.describe()})",
                               native, result)
    if result.bf16_ms >= BF16_MUST_BE_FASTER * result.fp32_ms:
        return PrecisionChoice("fp32", f"auto: {capability.evidence}, but bf16 was not faster here ({result.describe()})",
                               native, result)
    return PrecisionChoice("bf16", f"auto: {capability.evidence}, bf16 agreed with fp32 and was faster ({result.describe()})",
                           native, result)
