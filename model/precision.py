"""Which device and which number format (fp32 or bf16) run the network, and why: the torch side.

The rule itself (native bf16, a probe that agrees, faster) is plain logic in :mod:`model.precision_rule`,
importable without torch (the OpenVINO engine on an export applies it); its names are re-exported here so
``from model.precision import choose_precision, ProbeResult, ...`` keeps working. What is here needs torch:
the device (:func:`resolve_device`), a CUDA GPU's bf16 capability, the dtypes, and the tensor comparison.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from . import precision_rule
from .choices import DEVICES, PRECISIONS
from .precision_rule import (
    BF16_MUST_BE_FASTER,
    NATIVE_BF16_CPU_FLAGS,
    PROBE_TOLERANCE,
    Capability,
    ProbeResult,
    check_precision,
    compare_probabilities,
    cpu_bf16_capability,
    cpu_flags,
)

__all__ = ["BF16_MUST_BE_FASTER", "DEVICES", "DTYPES", "NATIVE_BF16_CPU_FLAGS", "PRECISIONS", "PROBE_TOLERANCE",
           "Capability", "DeviceUnavailable", "PrecisionChoice", "ProbeResult", "bf16_capability", "check_precision",
           "choose_precision", "compare_outputs", "cpu_flags", "resolve_device"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class DeviceUnavailable(ValueError):
    """The device asked for (``DEVICE=cuda``, ``--device cuda``) is not there."""


def resolve_device(requested: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU raises :class:`DeviceUnavailable`."""
    requested = precision_rule.checked_choice(requested, DEVICES, "device")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable("device cuda was asked for, but torch sees no CUDA GPU here "
                                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): use cpu or auto")
    return torch.device("cuda")


def bf16_capability(device: torch.device | str = "cpu", flags: Iterable[str] | None = None) -> Capability:
    """This machine's bf16 capability on ``device`` (``flags``: the CPU flags, default /proc/cpuinfo's)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Capability(True, f"{torch.cuda.get_device_name(device)} supports bf16")
        return Capability(False, f"{torch.cuda.get_device_name(device)} has no native bf16")
    return cpu_bf16_capability(flags)


def compare_outputs(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float = PROBE_TOLERANCE) -> tuple[bool, float]:
    """:func:`model.precision_rule.compare_probabilities` of two N x classes probability tensors."""
    return compare_probabilities(reference.float().cpu().numpy(), candidate.float().cpu().numpy(), tolerance)


@dataclass(frozen=True)
class PrecisionChoice(precision_rule.PrecisionChoice):
    """:class:`model.precision_rule.PrecisionChoice` with its torch dtype."""

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def choose_precision(requested: str, capability: Capability | None = None, probe: Callable[[], ProbeResult] | None = None,
                     device: torch.device | str = "cpu", tolerance: float = PROBE_TOLERANCE) -> PrecisionChoice:
    """:func:`model.precision_rule.choose_precision` with the capability defaulting to ``device``'s here."""
    capability = capability if capability is not None else bf16_capability(device)
    choice = precision_rule.choose_precision(requested, capability, probe, tolerance)
    return PrecisionChoice(choice.precision, choice.reason, choice.native_bf16, choice.probe)
