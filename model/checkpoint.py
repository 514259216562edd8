"""Saving and loading checkpoints: one file with everything needed to rebuild and serve the model.

The file is a plain ``torch.save`` of a dict of tensors, strings, numbers, lists and dicts, so that
``torch.load(..., weights_only=True)`` can read it without executing any code from it.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision

from .errors import CheckpointError
from .network import ARCH, NetworkSpec, ProductNet
from .preprocess import PreprocessConfig

FORMAT = "product-id-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt network plus its metadata."""

    network: ProductNet
    class_names: list[str]
    preprocess: PreprocessConfig
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created_at: str = ""
    versions: dict = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None


def save_checkpoint(
    path: str | Path,
    network: ProductNet,
    class_names: list[str],
    *,
    preprocess: PreprocessConfig = PreprocessConfig(),
    training: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write the checkpoint atomically (a temporary file renamed into place): readers never see half a file."""
    if len(class_names) != network.spec.num_classes:
        raise ValueError(f"{len(class_names)} class names for a network with {network.spec.num_classes} outputs")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": network.spec.arch,
        "head_sizes": list(network.spec.head_sizes),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
        "preprocess": preprocess.to_dict(),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
    }
    return torch_save_atomically(payload, path)


def torch_save_atomically(payload: dict, path: str | Path) -> Path:
    """``torch.save`` to a hidden temporary file, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_dict(path: str | Path) -> dict:
    """The raw checkpoint dict, read safely (``weights_only=True``) and checked for its format."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[dict, str]:
    """(the raw checkpoint dict, the sha256 of the bytes it was read from). The file is read once into
    memory and both come from those bytes: a file replaced while it is read cannot pair one file's
    weights with another's hash (the hash keys the OpenVINO cache and the export)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found (train one with `make train`)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); train it again with `make train`")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} could not be read ({exc})") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign or damaged files
        text = str(exc)
        if "Unsupported global" in text:
            detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line), "")
            raise CheckpointError(
                f"checkpoint {path} holds objects other than plain tensors and values; refused for safety ({detail[:160]})"
            ) from None
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint file ({first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a product-id checkpoint (no '{FORMAT}' format marker)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}; this code reads up to {FORMAT_VERSION}"
        )
    if data.get("arch") != ARCH:
        raise CheckpointError(f"checkpoint {path} is for architecture {data.get('arch')!r}; this code serves {ARCH!r}")
    del raw  # the tensors are copies: the file's bytes go before the network is built
    return data, sha256


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the network from a checkpoint file, in eval mode, without downloading anything."""
    data, sha256 = read_checkpoint(path)
    class_names = [str(name) for name in data["class_names"]]
    spec = NetworkSpec(num_classes=len(class_names), arch=data["arch"], head_sizes=tuple(data["head_sizes"]))
    network = ProductNet(spec)
    try:
        network.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the {ARCH} network: {str(exc).splitlines()[0][:200]}") from None
    network.eval()
    return Checkpoint(
        network=network,
        class_names=class_names,
        preprocess=PreprocessConfig.from_dict(data["preprocess"]),
        training=dict(data.get("training", {})),
        metrics=dict(data.get("metrics", {})),
        created_at=str(data.get("created_at", "")),
        versions=dict(data.get("versions", {})),
        sha256=sha256,
        path=Path(path),
    )
