"""Writing the folded incremental plan into an export, for the torch-free OpenVINO incremental engine
(:mod:`model.openvino_incremental`). Needs torch (it folds the network); reading it does not
(:mod:`model.incremental_store`).

The plan is :func:`model.incremental_plan.build_plan`'s, BatchNorm folded in fp32, written as data only:

- ``plan-<hex12>.npz``: every array (``<op>.weight`` out x in x k x k, ``<op>.bias``, ``tail.<i>.weight``
  out x in, ``tail.<i>.bias``), float32, no pickled objects (read back with ``allow_pickle=False``);
- ``plan-<hex12>.json``: the structure (the stem's conv and max pool, each bottleneck block's three convs and
  its shortcut with kernel/stride/padding/relu, the tail's linear layers with their ReLUs).

Both are named by the content hash of the ``.npz`` and listed with their sha256 under the manifest's
``incremental`` key, so the reader checks them like the IR files. Only torchvision Bottleneck ResNets (the
project's ResNet50) are written; for other networks the export has no plan and maps stay batched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from torch import nn

from .export_manifest import publish_named
from .incremental_plan import ConvOp, UnsupportedNetwork, _find_resnet, build_plan

PLAN_FORMAT = "resnet-bottleneck-plan"
PLAN_VERSION = 1


def _conv_entry(op: ConvOp, arrays: dict[str, np.ndarray]) -> dict:
    arrays[f"{op.name}.weight"] = op.weight.detach().float().contiguous().cpu().numpy()
    arrays[f"{op.name}.bias"] = op.bias.detach().float().cpu().numpy()
    return {"name": op.name, "kernel": op.kernel, "stride": op.stride, "padding": op.padding, "relu": op.relu}


def _tail_layers(network: nn.Module) -> list[nn.Module]:
    """The modules from the pooled features to the logits (backbone.fc, then the head's), flattened."""
    resnet, _ = _find_resnet(network)
    modules: list[nn.Module] = [resnet.fc]
    head = getattr(network, "head", None) if network is not resnet else None
    if head is not None:
        modules += list(head) if isinstance(head, nn.Sequential) else [head]
    return modules


def _tail_entries(network: nn.Module, arrays: dict[str, np.ndarray]) -> list[dict]:
    layers: list[dict] = []
    for module in _tail_layers(network):
        if isinstance(module, nn.Identity):
            continue
        if isinstance(module, nn.ReLU) and layers and not layers[-1]["relu"]:
            layers[-1]["relu"] = True
        elif isinstance(module, nn.Linear):
            index = len(layers)
            arrays[f"tail.{index}.weight"] = module.weight.detach().float().cpu().numpy()
            bias = module.bias.detach().float().cpu().numpy() if module.bias is not None else np.zeros(module.out_features, np.float32)
            arrays[f"tail.{index}.bias"] = bias
            layers.append({"weight": f"tail.{index}.weight", "bias": f"tail.{index}.bias", "relu": False})
        else:
            raise UnsupportedNetwork(f"the tail holds a {type(module).__name__}: only Linear and ReLU are written")
    return layers


def plan_data(network: nn.Module) -> tuple[dict, dict[str, np.ndarray]]:
    """(the JSON structure, the arrays) of ``network`` (eval mode); UnsupportedNetwork if not a Bottleneck ResNet."""
    plan = build_plan(network)
    arrays: dict[str, np.ndarray] = {}
    conv, pool = plan.stem
    blocks = []
    for block in plan.blocks:
        if len(block.main) != 3 or block.main[0].kernel != 1 or block.main[2].kernel != 1 or block.main[0].stride != 1:
            raise UnsupportedNetwork(f"{block.name}: only bottleneck blocks (1x1, kxk, 1x1) are written")
        blocks.append({"name": block.name, "main": [_conv_entry(op, arrays) for op in block.main],
                       "shortcut": _conv_entry(block.shortcut, arrays) if block.shortcut is not None else None})
    structure = {
        "format": PLAN_FORMAT, "version": PLAN_VERSION,
        "stem": {"conv": _conv_entry(conv, arrays), "pool": {"kernel": pool.kernel, "stride": pool.stride, "padding": pool.padding}},
        "blocks": blocks,
        "tail": _tail_entries(network, arrays),
    }
    return structure, arrays


def write_plan(network: nn.Module, folder: Path) -> dict:
    """The plan files of ``network`` in ``folder``, fsynced; the manifest's ``incremental`` entry."""
    structure, arrays = plan_data(network)
    temporary = folder / f".plan.{os.getpid()}.tmp.npz"
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    temporary_json = folder / f".plan.{os.getpid()}.tmp.json"
    temporary_json.write_text(json.dumps(structure, indent=1) + "\n", encoding="utf-8")
    return publish_named(folder, "plan", {"npz": temporary, "json": temporary_json}, named_by="npz")
