"""The window geometry of exact incremental occlusion (after Krypton): which outputs of each layer a patch
can change. Torch-free, shared by the torch engine (:mod:`model.incremental`) and the OpenVINO one
(:mod:`model.openvino_incremental`); an op here is anything with ``kernel``, ``stride`` and ``padding``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class WindowOp(Protocol):
    kernel: int
    stride: int
    padding: int


@dataclass(frozen=True)
class AxisWindows:
    """Along one axis of one layer's output, for each patch position index k, the window that may differ
    from the clean activation and is recomputed: ``[origins[k], origins[k] + sizes[k])``. Rows and
    columns share it (square image, same positions)."""

    extent: int
    origins: tuple[int, ...]
    sizes: tuple[int, ...]

    @classmethod
    def from_intervals(cls, extent: int, intervals: list[tuple[int, int]]) -> AxisWindows:
        return cls(extent, tuple(start for start, _ in intervals), tuple(end - start for start, end in intervals))

    def interval(self, k: int) -> tuple[int, int]:
        return self.origins[k], self.origins[k] + self.sizes[k]


def patch_windows(extent: int, starts: list[int], patch: int) -> AxisWindows:
    return AxisWindows(extent, tuple(starts), (patch,) * len(starts))


def reach(op: WindowOp, before: AxisWindows) -> AxisWindows:
    """The outputs whose receptive field meets each changed input window (clipped to the map)."""
    k, s, p = op.kernel, op.stride, op.padding
    extent = (before.extent + 2 * p - k) // s + 1
    intervals = []
    for start, size in zip(before.origins, before.sizes):
        first = max(0, -((k - 1 - p - start) // s))  # ceil((start + p - k + 1) / s)
        last = min(extent - 1, (start + size - 1 + p) // s)
        if last < first:  # e.g. a strided 1x1 conv that skips the changed row: recompute one anyway
            first = last = min(first, extent - 1)
        intervals.append((first, last + 1))
    return AxisWindows.from_intervals(extent, intervals)


def union(a: AxisWindows, b: AxisWindows) -> AxisWindows:
    intervals = []
    for k in range(len(a.origins)):
        (s1, e1), (s2, e2) = a.interval(k), b.interval(k)
        intervals.append((min(s1, s2), max(e1, e2)))
    return AxisWindows.from_intervals(a.extent, intervals)


def batch_windows(windows: AxisWindows, positions: list[int]) -> tuple[list[int], int]:
    """One window size for a batch of positions (the largest), each window shifted inward where it would
    leave the map; it still covers each position's own window, recomputing a few unchanged values."""
    size = max(windows.sizes[k] for k in positions)
    return [min(windows.origins[k], windows.extent - size) for k in positions], size
