"""``PRECISION=auto`` among fp32, bf16 and int8, and ``PRECISION=int8``: the fastest precision that agrees
with fp32 on the start-up probe, each rejection logged with its reason.

The rule (plain logic over measurements the caller makes, like :mod:`model.precision`):

1. a candidate is considered only where the hardware runs it natively (bf16: :func:`model.precision.bf16_capability`;
   int8: :func:`int8_capability`, AMX ``amx_int8`` or VNNI) and where it can be made (int8: OpenVINO and
   calibration photos, :mod:`model.int8`);
2. it must agree with the torch fp32 network on the probe images: the same top-1 (an image whose two most
   likely fp32 classes are within the tolerance is no evidence either way), and no probability further than
   its tolerance (:data:`TOLERANCES`) from fp32's;
3. it must be faster than fp32 on the probe (below ``BF16_MUST_BE_FASTER`` of its time);
4. of those left, the fastest serves; none left: fp32.

Tolerances. bf16 keeps :data:`model.precision.PROBE_TOLERANCE` (0.02). int8's is :data:`INT8_PROBE_TOLERANCE`:
on the proxy model (../shared/proxy, 240 photos; bench/bench_int8.py) int8's largest probability difference
from fp32 was 0.047 with top-1 agreeing on all but one photo, whose fp32 margin was under 0.05, and bf16's was
0.019; random probe images (what the bot probes with) gave smaller differences. 0.06 accepts that model with a
margin and still rejects a quantization that moves a decision: a real flip moves the top two probabilities by
more than their margin, and the top-1 check catches it at any tolerance.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .precision import BF16_MUST_BE_FASTER, PROBE_TOLERANCE, Capability
from .precision_rule import flag_capability

INT8_PROBE_TOLERANCE = 0.06
TOLERANCES = {"bf16": PROBE_TOLERANCE, "int8": INT8_PROBE_TOLERANCE}
NATIVE_INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def int8_capability(flags: Iterable[str] | None = None) -> Capability:
    """Whether this CPU (``flags``: default /proc/cpuinfo's) has int8 matrix or dot-product units."""
    return flag_capability(NATIVE_INT8_CPU_FLAGS, flags, "the CPU has neither AMX int8 nor VNNI (int8 would not be faster)")


@dataclass(frozen=True)
class CandidateProbe:
    """One precision against fp32 on the probe images."""

    precision: str
    top1_agree: bool
    max_difference: float  # largest |P_candidate - P_fp32|
    ms: float  # per image, best of the probe rounds

    def describe(self) -> str:
        return (f"{self.precision}: top-1 {'agreed' if self.top1_agree else 'DISAGREED'}, max prob diff "
                f"{self.max_difference:.4f}, {self.ms:.1f} ms/photo")


@dataclass(frozen=True)
class AutoChoice:
    precision: str
    reason: str
    probes: tuple[CandidateProbe, ...] = ()


def choose_fastest(fp32_ms: float, probes: Iterable[CandidateProbe], skipped: Iterable[str] = (),
                   tolerances: dict[str, float] | None = None) -> AutoChoice:
    """Apply rules 2-4 to the measured ``probes`` (``skipped``: why other candidates were not measured, for
    the reason); ``fp32_ms`` is fp32's ms/photo on the same runtime and probe."""
    tolerances = tolerances or TOLERANCES
    probes = tuple(probes)
    notes, accepted = list(skipped), []
    for probe in probes:
        tolerance = tolerances[probe.precision]
        if not probe.top1_agree or probe.max_difference > tolerance:
            notes.append(f"{probe.describe()}: disagreed with fp32 (tolerance {tolerance})")
        elif probe.ms >= BF16_MUST_BE_FASTER * fp32_ms:
            notes.append(f"{probe.describe()}: not faster than fp32's {fp32_ms:.1f} ms/photo")
        else:
            accepted.append(probe)
    if not accepted:
        return AutoChoice("fp32", f"auto: fp32 ({fp32_ms:.1f} ms/photo); " + "; ".join(notes or ["no candidate"]), probes)
    best = min(accepted, key=lambda probe: probe.ms)
    others = [f"{probe.describe()} (slower)" for probe in accepted if probe is not best]
    reason = (f"auto: {best.precision}, the fastest that agreed with fp32 ({best.describe()}; fp32 {fp32_ms:.1f} "
              f"ms/photo)")
    return AutoChoice(best.precision, "; ".join([reason, *others, *notes]), probes)
