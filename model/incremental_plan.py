"""The torchvision ResNet inside a network, flattened into a list of plain inference operations.

Incremental occlusion needs to run every layer on arbitrary windows of its input, so each conv is
turned into (weight, bias, kernel, stride, padding) with its BatchNorm folded in (eval mode only: the
running statistics are constants then), and the network into stem ops, residual blocks and a tail
(global average pool, then whatever maps 2048 features to logits).

The convs run in the plan's ``dtype`` (fp32 or bf16: folded in fp32, then rounded once) on the network's
device; the tail stays the network's own fp32 modules, fed fp32 features (it is a few small matrix
products, and the head's logits are compared across positions).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


class UnsupportedNetwork(ValueError):
    """The network is not a torchvision-ResNet shape the incremental engine understands."""


@dataclass(frozen=True, eq=False)
class ConvOp:
    """A conv with its BatchNorm folded in, optionally followed by ReLU. Square kernels only."""

    weight: torch.Tensor  # channels_last, out x in x k x k
    bias: torch.Tensor
    kernel: int
    stride: int
    padding: int
    relu: bool
    name: str

    pad_value = 0.0  # a conv's padding is zeros

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """On an input that already carries its padding (the engine supplies it), so padding=0 here."""
        out = torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride)
        return torch.relu_(out) if self.relu else out


@dataclass(frozen=True)
class MaxPoolOp:
    kernel: int
    stride: int
    padding: int
    name: str

    pad_value = float("-inf")  # max pooling ignores padding, which -inf reproduces

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(x, self.kernel, self.stride)


@dataclass(frozen=True, eq=False)
class BlockOp:
    """A residual block: ``relu(main(x) + shortcut(x))``, shortcut the identity when None."""

    main: tuple[ConvOp, ...]
    shortcut: ConvOp | None
    name: str


@dataclass(frozen=True, eq=False)
class ResNetPlan:
    stem: tuple[ConvOp | MaxPoolOp, ...]
    blocks: tuple[BlockOp, ...]
    tail: Callable[[torch.Tensor], torch.Tensor]  # N x C pooled fp32 features -> logits
    dtype: torch.dtype = torch.float32  # what the convs compute in
    device: torch.device = torch.device("cpu")


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | nn.Identity, relu: bool, name: str,
                 dtype: torch.dtype = torch.float32) -> ConvOp:
    """The conv with ``bn`` folded in, in ``dtype``; ``bn`` may be an Identity where it was folded at load
    (model.fold.fold_batch_norms), and then (in fp32) the conv's own tensors are used, not copied."""
    if conv.groups != 1 or conv.dilation != (1, 1) or len(set(conv.kernel_size)) != 1 or len(set(conv.stride)) != 1:
        raise UnsupportedNetwork(f"{name}: only square, ungrouped, undilated convs are supported")
    if not isinstance(conv.padding, tuple) or len(set(conv.padding)) != 1:
        raise UnsupportedNetwork(f"{name}: only symmetric numeric padding is supported")
    if isinstance(bn, nn.Identity):
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels, device=weight.device)
    elif isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_mean is not None:
        scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
        weight = conv.weight.detach().float() * scale.view(-1, 1, 1, 1)
        conv_bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros_like(scale)
        bias = bn.bias.detach().float() + (conv_bias - bn.running_mean.float()) * scale
    else:
        raise UnsupportedNetwork(f"{name}: BatchNorm must be in eval mode with running statistics to be folded")
    return ConvOp(
        weight=weight.to(dtype).contiguous(memory_format=torch.channels_last),
        bias=bias.to(dtype).contiguous(),
        kernel=conv.kernel_size[0],
        stride=conv.stride[0],
        padding=conv.padding[0],
        relu=relu,
        name=name,
    )


def _block_op(block: nn.Module, name: str, dtype: torch.dtype) -> BlockOp:
    if isinstance(block, Bottleneck):
        main = (
            fold_conv_bn(block.conv1, block.bn1, True, f"{name}.conv1", dtype),
            fold_conv_bn(block.conv2, block.bn2, True, f"{name}.conv2", dtype),
            fold_conv_bn(block.conv3, block.bn3, False, f"{name}.conv3", dtype),
        )
    elif isinstance(block, BasicBlock):
        main = (
            fold_conv_bn(block.conv1, block.bn1, True, f"{name}.conv1", dtype),
            fold_conv_bn(block.conv2, block.bn2, False, f"{name}.conv2", dtype),
        )
    else:
        raise UnsupportedNetwork(f"{name}: unknown block type {type(block).__name__}")
    shortcut = None
    if block.downsample is not None:
        ds = block.downsample
        if not (isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d)
                and isinstance(ds[1], (nn.BatchNorm2d, nn.Identity))):
            raise UnsupportedNetwork(f"{name}.downsample: expected Sequential(Conv2d, BatchNorm2d)")
        shortcut = fold_conv_bn(ds[0], ds[1], False, f"{name}.downsample", dtype)
    return BlockOp(main=main, shortcut=shortcut, name=name)


def _maxpool_op(pool: nn.Module) -> MaxPoolOp:
    if not isinstance(pool, nn.MaxPool2d) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise UnsupportedNetwork("maxpool: expected a plain MaxPool2d")
    kernel, stride, padding = (v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding))
    return MaxPoolOp(kernel=kernel, stride=stride, padding=padding, name="maxpool")


def _find_resnet(network: nn.Module) -> tuple[ResNet, Callable[[torch.Tensor], torch.Tensor]]:
    """The ResNet and the function from its pooled features to the network's logits."""
    if isinstance(network, ResNet):
        return network, network.fc
    backbone, head = getattr(network, "backbone", None), getattr(network, "head", None)
    if isinstance(backbone, ResNet) and isinstance(head, nn.Module):
        return backbone, lambda features: head(backbone.fc(features))
    raise UnsupportedNetwork(f"{type(network).__name__} is neither a torchvision ResNet nor has .backbone/.head")


def build_plan(network: nn.Module, dtype: torch.dtype = torch.float32) -> ResNetPlan:
    """Fold and flatten ``network`` (which must be in eval mode) into a :class:`ResNetPlan` computing in ``dtype``."""
    if network.training:
        raise UnsupportedNetwork("the network must be in eval mode")
    resnet, tail = _find_resnet(network)
    if not isinstance(resnet.relu, nn.ReLU) or not isinstance(resnet.avgpool, nn.AdaptiveAvgPool2d):
        raise UnsupportedNetwork("unexpected ResNet stem or pooling")
    if resnet.avgpool.output_size not in (1, (1, 1)):
        raise UnsupportedNetwork("the ResNet must pool globally")
    stem = (fold_conv_bn(resnet.conv1, resnet.bn1, True, "conv1", dtype), _maxpool_op(resnet.maxpool))
    blocks = tuple(
        _block_op(block, f"{layer_name}.{index}", dtype)
        for layer_name in ("layer1", "layer2", "layer3", "layer4")
        for index, block in enumerate(getattr(resnet, layer_name))
    )
    return ResNetPlan(stem=stem, blocks=blocks, tail=tail, dtype=dtype, device=resnet.conv1.weight.device)
