"""Exact incremental inference for occlusion maps (after Krypton, Nakandala et al., SIGMOD 2019).

A patch changes only a window of each layer's output: the window grows with every conv's kernel and
stride (and the max pool's), and a residual add takes the union of both branches. So the clean image
runs once with every layer's activations kept, and for each batch of patch positions only those windows
are recomputed, each from the cached input of its layer with the changed window of the previous layer
pasted in. Out-of-image input is the layer's padding (zeros for a conv, -inf for the max pool), never
cached data, so borders are exact. In a batch of positions every layer's window has one size (the
largest reach among them, shifted inward at the borders, which recomputes a few unchanged values), so
the batch runs as ordinary batched convs. When the reach covers the whole map (layer3/layer4 for large
patches) the window is the whole map.

Any dtype and device: the plan's (:func:`model.incremental_plan.build_plan`); activations stay in that
dtype from the image to the global pool, and the pooled features go to the fp32 tail.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .incremental_geometry import AxisWindows, batch_windows, patch_windows, reach, union  # noqa: F401  (re-exported)
from .incremental_plan import ConvOp, MaxPoolOp, ResNetPlan, build_plan

Op = ConvOp | MaxPoolOp


def _is_pointwise(op: Op) -> bool:
    return op.kernel == 1 and op.stride == 1 and op.padding == 0


@dataclass
class Delta:
    """A batch of recomputed windows of one layer's output; outside them the clean activation holds."""

    values: torch.Tensor  # B x C x h x w, channels_last
    row_origins: list[int]  # per batch item, where its window starts
    col_origins: list[int]
    rows: list[int]  # per batch item: the position index along the rows (into AxisWindows)
    cols: list[int]


def _pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """A channels_last N x C x H x W tensor as its (N*H*W) x C matrix of pixels (a view, no copy)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def assemble(source: torch.Tensor, pad: int, delta: Delta, row_origins: list[int], col_origins: list[int],
             height: int, width: int) -> torch.Tensor:
    """Windows of ``source`` (the clean 1 x C x H x W activation, already padded by ``pad``) at the given
    origins (unpadded coordinates, may be negative into the padding), with ``delta`` pasted over them.

    Both steps move whole pixels (C contiguous floats in channels_last) with one gather and one scatter
    for the batch, however the windows overlap."""
    batch, channels, source_width = len(row_origins), source.shape[1], source.shape[-1]
    rows = torch.tensor(row_origins).unsqueeze(1) + (pad + torch.arange(height))  # batch x height
    cols = torch.tensor(col_origins).unsqueeze(1) + (pad + torch.arange(width))
    gather = (rows.unsqueeze(2) * source_width + cols.unsqueeze(1)).reshape(-1).to(source.device)
    out = _pixel_rows(source).index_select(0, gather)

    delta_height, delta_width = delta.values.shape[-2:]
    target_rows = (torch.tensor(delta.row_origins) - torch.tensor(row_origins)).unsqueeze(1) + torch.arange(delta_height)
    target_cols = (torch.tensor(delta.col_origins) - torch.tensor(col_origins)).unsqueeze(1) + torch.arange(delta_width)
    inside = ((target_rows >= 0) & (target_rows < height)).unsqueeze(2) & ((target_cols >= 0) & (target_cols < width)).unsqueeze(1)
    item = torch.arange(batch).view(batch, 1, 1)
    destination = (item * height + target_rows.unsqueeze(2)) * width + target_cols.unsqueeze(1)
    pixels = _pixel_rows(delta.values)
    if bool(inside.all()):
        out.index_copy_(0, destination.reshape(-1).to(source.device), pixels)
    else:
        source_index = torch.arange(pixels.shape[0]).view(batch, delta_height, delta_width)
        out.index_copy_(0, destination[inside].to(source.device), pixels.index_select(0, source_index[inside].to(source.device)))
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)  # channels_last N x C x H x W


class IncrementalOcclusion:
    """Occlusion probabilities for many patch positions of one image, recomputing only what changes."""

    def __init__(self, network: torch.nn.Module, dtype: torch.dtype = torch.float32):
        self.plan: ResNetPlan = build_plan(network, dtype)
        self.profile: dict[str, float] = defaultdict(float)  # seconds per stage, summed over calls

    @torch.inference_mode()
    def prepare(self, image: torch.Tensor, patch: int, stride: int) -> PreparedImage:
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
        x = image.detach().to(plan.device, plan.dtype).unsqueeze(0).contiguous(memory_format=torch.channels_last)
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
            x = torch.relu(main_out + shortcut_out).contiguous(memory_format=torch.channels_last)
            windows = union(main_windows, shortcut_windows)
            self.outputs[block.name], self.windows[block.name] = x, windows
        self.final = x
        self.clean_logits = plan.tail(x.float().mean(dim=(2, 3)))
        self.input_windows = patch_windows(size, self.starts, patch)

    def batches(self, batch_size: int) -> list[list[tuple[int, int]]]:
        """All (row, col) grid positions, row-major, in batches of at most ``batch_size``.

        Row-major keeps a batch's windows alike (same rows, neighbouring columns). Grouping positions by
        their exact window sizes would save up to 15% of the multiply-adds, but the many distinct conv
        shapes it creates made it slower in measurements (oneDNN builds a kernel per shape)."""
        order = [(row, col) for row in range(len(self.starts)) for col in range(len(self.starts))]
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def multiply_adds(self, batches: list[list[tuple[int, int]]]) -> tuple[float, float, int]:
        """Conv multiply-adds per position: (in the windows as batched, in each position's exact reach,
        in a whole-network pass), i.e. the FLOP saving, independent of how fast small convs run."""
        plan = self.engine.plan
        convs = [op for op in plan.stem if isinstance(op, ConvOp)] + [
            op for block in plan.blocks for op in (*block.main, *([block.shortcut] if block.shortcut else []))]
        batched = exact = full = 0
        count = sum(len(batch) for batch in batches)
        for op in convs:
            per_output = op.weight.shape[0] * op.weight.shape[1] * op.kernel**2
            windows = self.windows[op.name]
            for batch in batches:
                height = batch_windows(windows, [r for r, _ in batch])[1]
                width = batch_windows(windows, [c for _, c in batch])[1]
                batched += len(batch) * height * width * per_output / count
                exact += sum(windows.sizes[r] * windows.sizes[c] for r, c in batch) * per_output / count
            full += windows.extent**2 * per_output
        return batched, exact, full

    def _clean_op(self, op: Op, x: torch.Tensor, windows: AxisWindows) -> tuple[torch.Tensor, AxisWindows]:
        padded = _padded(x, op)
        self.padded_inputs[op.name] = padded
        out = op.run(padded).contiguous(memory_format=torch.channels_last)
        out_windows = windows if _is_pointwise(op) else reach(op, windows)
        self.outputs[op.name], self.windows[op.name] = out, out_windows
        return out, out_windows

    def _apply(self, op: Op, delta: Delta) -> Delta:
        if _is_pointwise(op):
            return Delta(op.run(delta.values), delta.row_origins, delta.col_origins, delta.rows, delta.cols)
        windows = self.windows[op.name]
        (row_origins, height), (col_origins, width) = batch_windows(windows, delta.rows), batch_windows(windows, delta.cols)
        k, s, p = op.kernel, op.stride, op.padding
        x = assemble(self.padded_inputs[op.name], p, delta, [o * s - p for o in row_origins],
                     [o * s - p for o in col_origins], (height - 1) * s + k, (width - 1) * s + k)
        return Delta(op.run(x), row_origins, col_origins, delta.rows, delta.cols)

    def _window_of(self, delta: Delta, clean: torch.Tensor, windows: AxisWindows) -> Delta:
        """``delta`` brought onto this batch's ``windows`` (clean values fill what it does not cover)."""
        (row_origins, height), (col_origins, width) = batch_windows(windows, delta.rows), batch_windows(windows, delta.cols)
        if (row_origins, col_origins) != (delta.row_origins, delta.col_origins) or delta.values.shape[-2:] != (height, width):
            values = assemble(clean, 0, delta, row_origins, col_origins, height, width)
            delta = Delta(values, row_origins, col_origins, delta.rows, delta.cols)
        return delta

    @torch.inference_mode()
    def logits(self, positions: list[tuple[int, int]]) -> torch.Tensor:
        """Logits of the image occluded at each (row index, col index) of the grid."""
        profile, plan = self.engine.profile, self.engine.plan
        rows, cols = [r for r, _ in positions], [c for _, c in positions]
        started = time.perf_counter()
        patch = torch.zeros(len(positions), 3, self.patch, self.patch, dtype=plan.dtype, device=plan.device)
        patch = patch.contiguous(memory_format=torch.channels_last)
        delta = Delta(patch, [self.starts[r] for r in rows], [self.starts[c] for c in cols], rows, cols)
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
            identity = self._window_of(shortcut, shortcut_clean, windows).values
            delta = Delta(torch.relu_(main.values + identity), main.row_origins, main.col_origins, rows, cols)
            started = _lap(profile, block.name.split(".")[0], started)
        extent = self.final.shape[-1]
        full = AxisWindows(extent, (0,) * len(self.starts), (extent,) * len(self.starts))
        features = self._window_of(delta, self.final, full).values.float().mean(dim=(2, 3))
        logits = plan.tail(features)
        _lap(profile, "pool+head", started)
        return logits


def _lap(profile: dict[str, float], stage: str, started: float) -> float:
    now = time.perf_counter()
    profile[stage] += now - started
    return now
