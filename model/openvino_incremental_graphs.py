"""The small OpenVINO graphs of the incremental engine, built with the opset API from a stored plan's NumPy
weights (:mod:`model.incremental_store`): no IR files, no torch.

- :func:`clean_model`: the whole backbone at batch 1, its convs padded as in the network, with the stem's
  and every block's output as outputs (the clean pass whose activations the windows are pasted into).
- :func:`stem_model`: the stem on a batch of image windows: conv 7x7/2 (unpadded: the window carries its
  own zeros), ReLU, then a mask that zeroes the conv outputs outside the map, then the 3x3/2 max pool
  unpadded. After a ReLU every value is >= 0 and every pool window holds an in-map value, so zeros there
  equal the max pool's ignored padding exactly.
- :func:`block_model`: one whole bottleneck on a batch of input windows, fused: conv1 (1x1) on the window,
  the same mask (conv2's zero padding: conv1 of out-of-map input would be relu(bias), not 0), conv2 (kxk,
  stride s, unpadded), conv3 (1x1), the shortcut (a 1x1 stride-s conv or the identity) on the window's
  inner part, add, ReLU. One compiled model per block instead of one per conv: the 1x1 convs never need
  their own windows (pointwise), so the only gather between pieces is at block boundaries.

Every shape is static (batch, window): oneDNN picks its kernels once per model at compile time.
"""
from __future__ import annotations

import numpy as np

from .incremental_store import Block, Conv, StoredPlan


def _ops():
    import openvino.opset13 as ops

    return ops


def _conv(x, conv: Conv, padding: int):
    ops = _ops()
    # shared_memory: the graph points at the plan's arrays (which the runtime keeps) instead of copying them. The CPU
    # plugin then keeps no copy of its own beside its repacked weights: ~90 MB less per compiled set of pieces
    # (random-init ResNet50 export, 16/8: 118 MB against 206 MB of RSS, one process, one factor changed).
    y = ops.convolution(x, ops.constant(conv.weight, shared_memory=True), [conv.stride] * 2, [padding] * 2, [padding] * 2, [1, 1])
    y = ops.add(y, ops.constant(conv.bias.reshape(1, -1, 1, 1)))
    return ops.relu(y) if conv.relu else y


def _slice(x, start: int, stop: int, step: int = 1):
    """x[:, :, start:stop:step, start:stop:step]."""
    ops = _ops()
    return ops.slice(x, np.array([start, start], np.int64), np.array([stop, stop], np.int64),
                     np.array([step, step], np.int64), np.array([2, 3], np.int64))


def _block(x, block: Block, mask=None, out_size: int | None = None):
    """The block on ``x``: full (its convs padded) when ``mask`` is None, else on a window (module docstring)."""
    conv1, conv2, conv3 = block.main
    if mask is None:
        h = _conv(_conv(_conv(x, conv1, 0), conv2, conv2.padding), conv3, 0)
        shortcut = x if block.shortcut is None else _conv(x, block.shortcut, 0)
    else:
        h = _ops().multiply(_conv(x, conv1, 0), mask)
        h = _conv(_conv(h, conv2, 0), conv3, 0)
        inner = _slice(x, conv2.padding, conv2.padding + (out_size - 1) * conv2.stride + 1)
        shortcut = _slice(inner, 0, out_size) if block.shortcut is None else _conv(inner, block.shortcut, 0)
    return _ops().relu(_ops().add(h, shortcut))


def _parameter(shape: list[int], name: str):
    import openvino as ov

    parameter = _ops().parameter(shape, ov.Type.f32, name=name)
    return parameter


def clean_model(plan: StoredPlan, side: int):
    """Outputs: the stem's, then each block's (1 x C x H x W)."""
    import openvino as ov

    ops = _ops()
    image = _parameter([1, 3, side, side], "image")
    pool = plan.pool
    x = ops.max_pool(_conv(image, plan.stem, plan.stem.padding), [pool.stride] * 2, [1, 1], [pool.padding] * 2,
                     [pool.padding] * 2, [pool.kernel] * 2).output(0)
    outputs = [x]
    for block in plan.blocks:
        x = _block(x, block)
        outputs.append(x)
    return ov.Model([ops.result(o) for o in outputs], [image], "incremental-clean")


def stem_model(plan: StoredPlan, batch: int, image_window: int, pool_window: int):
    """Inputs: image windows (B x 3 x W x W), the mask of the pool's input (B x 1 x P x P); output the stem's window."""
    import openvino as ov

    ops = _ops()
    image = _parameter([batch, 3, image_window, image_window], "window")
    mask = _parameter([batch, 1, pool_window, pool_window], "mask")
    pool = plan.pool
    x = ops.multiply(_conv(image, plan.stem, 0), mask)
    x = ops.max_pool(x, [pool.stride] * 2, [1, 1], [0, 0], [0, 0], [pool.kernel] * 2).output(0)
    return ov.Model([ops.result(x)], [image, mask], "incremental-stem")


def rest_model(blocks: tuple[Block, ...], batch: int, channels: int, side: int):
    """The last blocks on whole maps (B x C x side x side in, the final map out): where the windows have grown to
    (nearly) the whole map, one ordinary padded graph computes them faster than windows with masks."""
    import openvino as ov

    x = y = _parameter([batch, channels, side, side], "map")
    for block in blocks:
        y = _block(y, block)
    return ov.Model([_ops().result(y)], [x], "incremental-rest")


def block_model(block: Block, batch: int, channels: int, window: int, out_size: int):
    """Inputs: the block's input windows (B x C x W x W) and their mask (B x 1 x W x W); output B x C' x O x O."""
    import openvino as ov

    x = _parameter([batch, channels, window, window], "window")
    mask = _parameter([batch, 1, window, window], "mask")
    y = _block(x, block, mask, out_size)
    return ov.Model([_ops().result(y)], [x, mask], f"incremental-{block.name}")
