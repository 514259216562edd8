"""Where each compiled piece of the OpenVINO incremental engine reads and writes, for one occlusion setting.

From :mod:`model.incremental_geometry`'s windows (the outputs each patch position can change, per layer),
each piece gets ONE window size for every position of the setting (the largest, each window shifted inward
at the borders as :func:`batch_windows` does), so its compiled model has a static shape. Rows and columns
share the geometry (square image, the same starts on both axes): a window is (origin per position, size).
For a piece with kernel k, stride s and padding p whose output window starts at o with size n, the input
window starts at o*s - p and has (n - 1)*s + k values; where it leaves the map the mask is 0. From the first
block whose window covers ``full_share`` of its map (layer3 or layer4 for small patches), the rest of the
network runs on whole maps: windows that large cost more than the whole map (their margins, the masks).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .incremental_geometry import AxisWindows, batch_windows, patch_windows, reach, union
from .incremental_store import StoredPlan
from .occlusion_grid import grid_positions


@dataclass(frozen=True)
class Window:
    """Along one axis: per position index, where the window starts (in its map's coordinates), and its size."""

    origins: np.ndarray  # int, one per position index
    size: int
    extent: int  # the map's size along the axis

    def valid(self) -> np.ndarray:
        """positions x size booleans: which of each window's values lie inside the map."""
        coordinates = self.origins[:, None] + np.arange(self.size)[None, :]
        return (coordinates >= 0) & (coordinates < self.extent)


@dataclass(frozen=True)
class Stage:
    """One compiled piece: its input window (in the input map's coordinates), its output window."""

    name: str
    input: Window
    output: Window
    channels: int  # input channels


def _fixed(windows: AxisWindows) -> Window:
    origins, size = batch_windows(windows, list(range(len(windows.origins))))
    return Window(np.array(origins), size, windows.extent)


def _input_of(output: Window, kernel: int, stride: int, padding: int, extent: int) -> Window:
    return Window(output.origins * stride - padding, (output.size - 1) * stride + kernel, extent)


@dataclass(frozen=True)
class SettingGeometry:
    side: int
    patch: int
    starts: list[int]
    stem: Stage  # input: the image; its mask is on the pool's input, ``pool_input``
    pool_input: Window
    blocks: tuple[Stage, ...]
    full_from: int  # blocks from this index on run on whole maps (their windows cover nearly all of it)

    @classmethod
    def of(cls, plan: StoredPlan, side: int, patch: int, stride: int, full_share: float = 0.7) -> SettingGeometry:
        starts = grid_positions(side, patch, stride)
        conv_windows = reach(plan.stem, patch_windows(side, starts, patch))
        windows = reach(plan.pool, conv_windows)
        stem_out = _fixed(windows)
        pool_input = _input_of(stem_out, plan.pool.kernel, plan.pool.stride, plan.pool.padding, conv_windows.extent)
        image = _input_of(pool_input, plan.stem.kernel, plan.stem.stride, plan.stem.padding, side)
        stem = Stage("stem", image, stem_out, 3)
        blocks = []
        for block in plan.blocks:
            conv2, shortcut = block.main[1], block.shortcut
            main = reach(conv2, windows)  # conv1 and conv3 are pointwise: their windows are their inputs'
            block_windows = union(main, reach(shortcut, windows) if shortcut is not None else windows)
            output = _fixed(block_windows)
            blocks.append(Stage(block.name, _input_of(output, conv2.kernel, conv2.stride, conv2.padding, windows.extent),
                                output, block.main[0].weight.shape[1]))
            windows = block_windows
        full_from = next((i for i, stage in enumerate(blocks) if stage.output.size >= full_share * stage.output.extent),
                         len(blocks))
        return cls(side, patch, starts, stem, pool_input, tuple(blocks), full_from)

    def multiply_adds(self, plan: StoredPlan) -> tuple[float, float]:
        """Conv multiply-adds per position (in these static windows, in a whole-network pass)."""
        def macs(conv, size: int) -> float:
            return float(conv.weight.size) * size * size

        windowed = macs(plan.stem, self.pool_input.size)
        full = macs(plan.stem, self.pool_input.extent)
        for index, (stage, block) in enumerate(zip(self.blocks, plan.blocks)):
            conv1, conv2, conv3 = block.main
            out, inner = stage.output, stage.input
            if index >= self.full_from:
                out, inner = Window(out.origins, out.extent, out.extent), Window(inner.origins, inner.extent, inner.extent)
            windowed += macs(conv1, inner.size) + macs(conv2, out.size) + macs(conv3, out.size)
            full += macs(conv1, inner.extent) + macs(conv2, out.extent) + macs(conv3, out.extent)
            if block.shortcut is not None:
                windowed, full = windowed + macs(block.shortcut, out.size), full + macs(block.shortcut, out.extent)
        return windowed, full
