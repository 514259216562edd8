"""Exact incremental inference for occlusion maps (after Krypton, Nakandala et al., SIGMOD 2019).

A patch changes only a window of each layer's output: the window grows with every conv's kernel and
stride (and the max pool's), and a residual add takes the union of both branches. So the clean image
runs once with every layer's activations kept, and for each batch of patch positions only those windows
are recomputed, each from the cached input of its layer with the changed window of the previous layer
pasted in. Out-of-image input is the layer's padding (zeros for a conv, -inf for the max pool), never
cached data, so borders are exact. Windows have one size per layer for the whole grid (the largest reach,
shifted inward at the borders, which recomputes a few unchanged values), so positions batch together.
When the reach covers the whole map (layer3/layer4 for large patches) the window is the whole map.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .incremental_plan import ConvOp, MaxPoolOp, ResNetPlan, build_plan

Op = ConvOp | MaxPoolOp


@dataclass(frozen=True)
class AxisWindows:
    """Along one axis of one layer's output, for each patch position index k: the interval that may
    differ from the clean activation, ``intervals[k] = (start, end)``, and the window recomputed,
    ``[origins[k], origins[k] + size)``. Rows and columns share it (square image, same positions)."""

    extent: int
    size: int
    origins: tuple[int, ...]
    intervals: tuple[tuple[int, int], ...]


def _fit_windows(extent: int, intervals: list[tuple[int, int]]) -> AxisWindows:
    size = max(end - start for start, end in intervals)
    origins = tuple(min(start, extent - size) for start, _ in intervals)
    return AxisWindows(extent, size, origins, tuple(intervals))


def patch_windows(extent: int, starts: list[int], patch: int) -> AxisWindows:
    return AxisWindows(extent, patch, tuple(starts), tuple((s, s + patch) for s in starts))


def reach(op: Op, before: AxisWindows) -> AxisWindows:
    """The output outputs whose receptive field meets each changed input interval."""
    k, s, p = op.kernel, op.stride, op.padding
    extent = (before.extent + 2 * p - k) // s + 1
    intervals = []
    for start, end in before.intervals:
        first = max(0, -((k - 1 - p - start) // s))  # ceil((start + p - k + 1) / s)
        last = min(extent - 1, (end - 1 + p) // s)
        if last < first:  # e.g. a strided 1x1 conv that skips the changed row: recompute one anyway
            first = last = min(first, extent - 1)
        intervals.append((first, last + 1))
    return _fit_windows(extent, intervals)


def union(a: AxisWindows, b: AxisWindows) -> AxisWindows:
    intervals = [(min(s1, s2), max(e1, e2)) for (s1, e1), (s2, e2) in zip(a.intervals, b.intervals)]
    return _fit_windows(a.extent, intervals)


def _is_pointwise(op: Op) -> bool:
    return op.kernel == 1 and op.stride == 1 and op.padding == 0


@dataclass
class Delta:
    """A batch of recomputed windows of one layer's output; outside them the clean activation holds."""

    values: torch.Tensor  # B x C x size x size, channels_last
    windows: AxisWindows
    rows: list[int]  # per batch item: the position index along the rows (into windows.origins)
    cols: list[int]


def assemble(source: torch.Tensor, pad: int, delta: Delta, row_origins: list[int], col_origins: list[int],
             height: int, width: int) -> torch.Tensor:
    """Windows of ``source`` (the clean 1 x C x H x W activation, already padded by ``pad``) at the given
    origins (unpadded coordinates, may be negative into the padding), with ``delta`` pasted over them."""
    batch = len(row_origins)
    if len(set(row_origins)) == 1 and len(set(col_origins)) == 1:
        y, x = row_origins[0] + pad, col_origins[0] + pad
        out = source[:, :, y : y + height, x : x + width].expand(batch, -1, -1, -1).clone(memory_format=torch.channels_last)
    else:
        out = torch.cat([source[:, :, y + pad : y + pad + height, x + pad : x + pad + width]
                         for y, x in zip(row_origins, col_origins)]).contiguous(memory_format=torch.channels_last)
    size = delta.windows.size
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for b in range(batch):
        dy = delta.windows.origins[delta.rows[b]] - row_origins[b]
        dx = delta.windows.origins[delta.cols[b]] - col_origins[b]
        groups[(dy, dx)].append(b)
    for (dy, dx), members in groups.items():
        y0, y1, x0, x1 = max(dy, 0), min(dy + size, height), max(dx, 0), min(dx + size, width)
        if y0 >= y1 or x0 >= x1:
            continue
        rows, cols = slice(y0, y1), slice(x0, x1)
        src_rows, src_cols = slice(y0 - dy, y1 - dy), slice(x0 - dx, x1 - dx)
        if len(members) == batch:
            out[:, :, rows, cols] = delta.values[:, :, src_rows, src_cols]
        else:
            index = torch.tensor(members)
            out[index, :, rows, cols] = delta.values[index][:, :, src_rows, src_cols]
    return out


class IncrementalOcclusion:
    """Occlusion probabilities for many patch positions of one image, recomputing only what changes."""

    def __init__(self, network: torch.nn.Module):
        self.plan: ResNetPlan = build_plan(network)
        self.profile: dict[str, float] = defaultdict(float)  # seconds per stage, summed over calls

    @torch.inference_mode()
    def prepare(self, image: torch.Tensor, patch: int, stride: int) -> "PreparedImage":
        return PreparedImage(self, image, patch, stride)


def _padded(x: torch.Tensor, op: Op) -> torch.Tensor:
    if op.padding == 0:
        return x
    return F.pad(x, (op.padding,) * 4, value=op.pad_value).contiguous(memory_format=torch.channels_last)


class PreparedImage:
    """The clean pass of one image (every layer's padded input cached) and the window geometry of a grid."""

    def __init__(self, engine: IncrementalOcclusion, image: torch.Tensor, patch: int, stride: int):
        self.engine = engine
        self.patch = patch
        size = image.shape[-1]
        self.starts = list(range(0, size - patch + 1, stride))
        self.padded_inputs: dict[str, torch.Tensor] = {}  # op name -> its clean input, padded
        self.outputs: dict[str, torch.Tensor] = {}  # op/block name -> its clean output
        self.windows: dict[str, AxisWindows] = {}  # op/block name -> the windows of its output
        plan = engine.plan
        x = image.detach().float().unsqueeze(0).contiguous(memory_format=torch.channels_last)
        self.image_padded = x
        windows = patch_windows(size, self.starts, patch)
        for op in plan.stem:
            x, windows = self._clean_op(op, x, windows)
        for block in plan.blocks:
            block_input, input_windows = x, windows
            for op in block.main:
                x, windows = self._clean_op(op, x, windows)
            main_out, main_windows = x, windows
            if block.shortcut is not None:
                shortcut_out, shortcut_windows = self._clean_op(block.shortcut, block_input, input_windows)
            else:
                shortcut_out, shortcut_windows = block_input, input_windows
            x = torch.relu(main_out + shortcut_out)
            windows = union(main_windows, shortcut_windows)
            self.outputs[block.name], self.windows[block.name] = x, windows
        self.final = x
        self.clean_logits = plan.tail(x.mean(dim=(2, 3)))
        self.input_windows = patch_windows(size, self.starts, patch)

    def multiply_adds(self) -> tuple[int, int]:
        """(per position in the windows, per whole-network pass) multiply-adds of the convs: the FLOP
        saving this geometry allows, independent of how fast small convs run."""
        plan = self.engine.plan
        convs = [op for op in plan.stem if isinstance(op, ConvOp)] + [
            op for block in plan.blocks for op in (*block.main, *([block.shortcut] if block.shortcut else []))]
        windowed = full = 0
        for op in convs:
            per_output = op.weight.shape[0] * op.weight.shape[1] * op.kernel**2
            windows = self.windows[op.name]
            windowed += windows.size**2 * per_output
            full += windows.extent**2 * per_output
        return windowed, full

    def _clean_op(self, op: Op, x: torch.Tensor, windows: AxisWindows) -> tuple[torch.Tensor, AxisWindows]:
        padded = _padded(x, op)
        self.padded_inputs[op.name] = padded
        out = op.run(padded).contiguous(memory_format=torch.channels_last)
        out_windows = windows if _is_pointwise(op) else reach(op, windows)
        self.outputs[op.name], self.windows[op.name] = out, out_windows
        return out, out_windows

    def _apply(self, op: Op, delta: Delta) -> Delta:
        windows = self.windows[op.name]
        if _is_pointwise(op):
            return Delta(op.run(delta.values), windows, delta.rows, delta.cols)
        k, s, p = op.kernel, op.stride, op.padding
        in_size = (windows.size - 1) * s + k
        x = assemble(self.padded_inputs[op.name], p, delta,
                     [windows.origins[r] * s - p for r in delta.rows], [windows.origins[c] * s - p for c in delta.cols],
                     in_size, in_size)
        return Delta(op.run(x), windows, delta.rows, delta.cols)

    def _window_of(self, delta: Delta, clean: torch.Tensor, windows: AxisWindows) -> torch.Tensor:
        """``delta`` brought onto ``windows`` (the clean values filling what it does not cover)."""
        if delta.windows.size == windows.size and delta.windows.origins == windows.origins:
            return delta.values
        return assemble(clean, 0, delta, [windows.origins[r] for r in delta.rows],
                        [windows.origins[c] for c in delta.cols], windows.size, windows.size)

    @torch.inference_mode()
    def logits(self, positions: list[tuple[int, int]]) -> torch.Tensor:
        """Logits of the image occluded at each (row index, col index) of the grid."""
        profile, plan = self.engine.profile, self.engine.plan
        rows, cols = [r for r, _ in positions], [c for _, c in positions]
        started = time.perf_counter()
        patch = torch.zeros(len(positions), 3, self.patch, self.patch).contiguous(memory_format=torch.channels_last)
        delta = Delta(patch, self.input_windows, rows, cols)
        for op in plan.stem:
            delta = self._apply(op, delta)
        started = _lap(profile, "stem", started)
        input_name = plan.stem[-1].name
        for block in plan.blocks:
            block_input = delta
            for op in block.main:
                delta = self._apply(op, delta)
            if block.shortcut is not None:
                shortcut, shortcut_clean = self._apply(block.shortcut, block_input), self.outputs[block.shortcut.name]
            else:
                shortcut, shortcut_clean = block_input, self.outputs[input_name]
            input_name = block.name
            windows = self.windows[block.name]
            main = self._window_of(delta, self.outputs[block.main[-1].name], windows)
            identity = self._window_of(shortcut, shortcut_clean, windows)
            delta = Delta(torch.relu_(main + identity), windows, rows, cols)
            started = _lap(profile, block.name.split(".")[0], started)
        full = AxisWindows(self.final.shape[-1], self.final.shape[-1], (0,) * len(self.starts), ())
        features = self._window_of(delta, self.final, full).mean(dim=(2, 3))
        logits = plan.tail(features)
        _lap(profile, "pool+head", started)
        return logits


def _lap(profile: dict[str, float], stage: str, started: float) -> float:
    now = time.perf_counter()
    profile[stage] += now - started
    return now
