"""Fold each BatchNorm into the convolution before it, for inference.

In eval mode a BatchNorm is a fixed per-channel scale and shift, so it can live in the conv's weights and
bias: one operator fewer per conv (ResNet50 has 53), one activation tensor fewer to allocate, one GIL
hand-back fewer between layers (the speed-up is recorded in docs/benchmarks.md); logits agree to about 3e-6.

Only a Conv2d immediately followed by a BatchNorm2d among a module's children is folded: the order in
which torchvision's ResNets (and most CNNs) register and call them. The result is checked against the
unfolded network on a probe input; if they disagree, the network is left as it was.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def fold_batch_norms(network: nn.Module, probe_size: int = 64, atol: float = 1e-3) -> nn.Module:
    """``network`` (eval mode) with its conv+BatchNorm pairs folded, or ``network`` itself if folding
    would change its output. The BatchNorms become ``nn.Identity`` (state-dict keys change: serve only)."""
    if network.training:
        raise ValueError("fold BatchNorms only in eval mode")
    folded = copy.deepcopy(network)
    pairs = 0
    for parent in folded.modules():
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
                parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                parent._modules[bn_name] = nn.Identity()
                pairs += 1
    if pairs == 0:
        return network
    probe = torch.randn(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
    difference = output_disagreement(network, folded, probe, atol)
    if difference is not None:
        log.warning("folding %d BatchNorms changed the output by %.3g: serving the network unfolded", pairs, difference)
        return network
    return folded


def output_disagreement(reference, candidate, probe: torch.Tensor, atol: float) -> float | None:
    """How far ``candidate``'s output on ``probe`` is from ``reference``'s, if by more than ``atol``
    (relative to the largest output, at least 1); ``None`` when they agree. A rewritten network (folded,
    traced) is only served after this says nothing."""
    with torch.inference_mode():
        expected, got = reference(probe), candidate(probe)
    difference = float((expected - got).abs().max()) if expected.shape == got.shape else float("inf")
    return None if difference <= atol * max(1.0, float(expected.abs().max())) else difference
