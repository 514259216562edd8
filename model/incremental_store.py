"""Reading the folded incremental plan of an export (written by :mod:`model.incremental_export`), torch-free.

The files are those the manifest's ``incremental`` entry names, inside the export folder, and their bytes
must hash to its sha256 figures as read (:func:`model.export_manifest.read_verified`): a damaged or
modified plan raises :class:`ExportUnusable` and is never served. The arrays are views of the verified file
mapping (:mod:`model.mapped_npz`: headers parsed as data, no pickle, so reading executes no code), whose pages
are dropped from resident memory after each compilation; the structure is plain JSON, checked against the
arrays' shapes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .export_manifest import Export, ExportUnusable, read_verified
from .mapped_npz import MappedNpz

PLAN_FORMAT = "resnet-bottleneck-plan"  # as model/incremental_export.py writes it
PLAN_VERSION = 1


@dataclass(frozen=True, eq=False)
class Conv:
    """A conv with its BatchNorm folded in (out x in x k x k float32), optionally followed by ReLU."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    kernel: int
    stride: int
    padding: int
    relu: bool


@dataclass(frozen=True)
class Pool:
    kernel: int
    stride: int
    padding: int


@dataclass(frozen=True, eq=False)
class Block:
    """A bottleneck: ``relu(conv3(conv2(conv1(x))) + shortcut(x))``, the shortcut the identity when None."""

    name: str
    main: tuple[Conv, Conv, Conv]
    shortcut: Conv | None


@dataclass(frozen=True, eq=False)
class Linear:
    weight: np.ndarray  # out x in
    bias: np.ndarray
    relu: bool


@dataclass(frozen=True, eq=False)
class StoredPlan:
    stem: Conv
    pool: Pool
    blocks: tuple[Block, ...]
    tail: tuple[Linear, ...]
    pages: MappedNpz | None = None  # the file mapping the weights are views of (None: arrays in memory)

    def release_pages(self) -> None:
        """After a compilation: the weights' pages leave this process's resident memory (model/mapped_npz.py)."""
        if self.pages is not None:
            self.pages.release()

    def verify_pages(self) -> None:
        """Before a later compilation: the mapped file still hashes to the manifest's figure."""
        if self.pages is not None:
            self.pages.verify()

    def head(self, features: np.ndarray) -> np.ndarray:
        """N x C pooled float32 features -> N x classes float32 logits."""
        x = features.astype(np.float32)
        for layer in self.tail:
            x = x @ layer.weight.T + layer.bias
            if layer.relu:
                np.maximum(x, 0, out=x)
        return x


def has_plan(export: Export) -> bool:
    return isinstance(export.manifest.get("incremental"), dict)


def _array(arrays, key: str) -> np.ndarray:
    if key not in arrays.files:
        raise ExportUnusable(f"the incremental plan lacks {key}")
    return np.ascontiguousarray(arrays[key], dtype=np.float32)


def _conv(entry: dict, arrays) -> Conv:
    name = str(entry["name"])
    weight, bias = _array(arrays, f"{name}.weight"), _array(arrays, f"{name}.bias")
    kernel = int(entry["kernel"])
    if weight.ndim != 4 or weight.shape[2:] != (kernel, kernel) or bias.shape != (weight.shape[0],):
        raise ExportUnusable(f"the incremental plan's {name} has shapes {weight.shape}, {bias.shape}")
    return Conv(name, weight, bias, kernel, int(entry["stride"]), int(entry["padding"]), bool(entry["relu"]))


def read_plan(export: Export) -> StoredPlan:
    """The verified plan of ``export`` (ExportUnusable if it has none, or its files fail a check)."""
    entry = export.manifest.get("incremental")
    if not isinstance(entry, dict):
        raise ExportUnusable(f"the export at {export.folder} has no incremental plan (export it again)")
    try:
        paths = {kind: export.folder / str(entry[kind]) for kind in ("npz", "json")}
        if any(path.parent != export.folder for path in paths.values()):
            raise ExportUnusable(f"the manifest's incremental plan names a file outside {export.folder}")
        structure_bytes = read_verified(paths["json"], str(entry["json_sha256"]))
        arrays = MappedNpz(paths["npz"], str(entry["npz_sha256"]))
    except (KeyError, TypeError) as error:
        raise ExportUnusable(f"the manifest's incremental entry is incomplete ({error})") from None
    try:
        structure = json.loads(structure_bytes.decode("utf-8"))
        if structure.get("format") != PLAN_FORMAT or int(structure.get("version", 0)) > PLAN_VERSION:
            raise ExportUnusable(f"{paths['json'].name} is not a version-{PLAN_VERSION} {PLAN_FORMAT}")
        stem = structure["stem"]
        blocks = tuple(Block(str(b["name"]), tuple(_conv(c, arrays) for c in b["main"]),
                             _conv(b["shortcut"], arrays) if b["shortcut"] else None) for b in structure["blocks"])
        tail = tuple(Linear(_array(arrays, t["weight"]), _array(arrays, t["bias"]), bool(t["relu"])) for t in structure["tail"])
        plan = StoredPlan(_conv(stem["conv"], arrays), Pool(**{k: int(stem["pool"][k]) for k in ("kernel", "stride", "padding")}),
                          blocks, tail, arrays)
        arrays.release()  # the shape checks touched every array's first page
        return plan
    except ExportUnusable:
        raise
    except (KeyError, TypeError, ValueError, OSError, UnicodeDecodeError) as error:
        raise ExportUnusable(f"the incremental plan is unreadable ({type(error).__name__}: {error})") from None
