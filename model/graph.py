"""The network as one frozen TorchScript graph, for serving.

Why: an eager forward pass returns to Python between operators, a few hundred times per ResNet50, and
each return takes the GIL back. In the bot that GIL is shared with the event loop and the decoders, so
the classifier waited for their turns while its second OpenMP thread sat idle. A traced graph runs
from the first operator to the last in C++ with the GIL released. On some CPUs that made the bot
clearly faster, on others it was slower than eager (docs/benchmarks.md), so the bot measures it at start
(:mod:`model.runtime`, ``FROZEN_GRAPH=auto``).

``torch.jit.trace`` and ``torch.jit.freeze`` are deprecated in favour of ``torch.compile`` and
``torch.export``; both of those need a C++ compiler at run time (or an ahead-of-time build tied to the
exact torch version) and 20-40 s of compiling per batch size on this class of machine. Until serving can
afford that, the traced graph is used where torch still has it, checked against the eager network
before it is trusted, and the bot falls back to eager (logged) wherever tracing is missing or
disagrees. Only the classification forward pass uses the graph: the heat-map explainer walks the
eager modules layer by layer.
"""
from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from .fold import output_disagreement

log = logging.getLogger(__name__)


def freeze_graph(network: nn.Module, side: int = 224, atol: float = 1e-5) -> torch.jit.ScriptModule | None:
    """``network`` (eval mode, channels_last) traced at batch 1 and frozen, or None if torch cannot
    trace it or the graph's output at another batch size differs from the eager network's by more
    than ``atol`` (relative to the largest logit)."""
    if network.training:
        raise ValueError("freeze a graph only in eval mode")
    example = torch.zeros(1, 3, side, side).contiguous(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the deprecation above, once per start
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # a wrong trace is caught below
            with torch.no_grad():
                graph = torch.jit.freeze(torch.jit.trace(network, example, check_trace=False).eval())
    except Exception as error:  # a torch without TorchScript, or a network it cannot trace
        log.warning("no frozen graph (%s: %s): serving the eager network", type(error).__name__, error)
        return None
    # A different batch size than the one traced: the graph must not have baked the batch into a shape.
    probe = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    difference = output_disagreement(network, graph, probe.contiguous(memory_format=torch.channels_last), atol)
    if difference is not None:
        log.warning("the frozen graph differs from the network by %.3g: serving the eager network", difference)
        return None
    return graph
