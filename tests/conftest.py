"""Fixtures shared by every test package: tiny random-init checkpoints and generated photos
(devtools.samples).

Nothing here touches the network or needs ImageNet weights.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from devtools.samples import CLASS_NAMES, image_bytes, make_photo
from model import build_network, load_classifier, save_checkpoint

SEED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "seed"


@pytest.fixture(scope="session", autouse=True)
def compiled_catalogs() -> None:
    """The translation catalogs as `make catalogs` compiles them (a build step, like the checkpoint below), so
    `pytest` alone tests the .po files as they are now."""
    from bot.i18n import compile_catalogs

    compile_catalogs()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init ResNet50 checkpoint with three classes (deterministic)."""
    torch.manual_seed(0)
    network = build_network(len(CLASS_NAMES), "none").eval()
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    save_checkpoint(path, network, CLASS_NAMES, training={"weights": "none"}, metrics={"test_accuracy": 0.0})
    return path


@pytest.fixture(scope="session")
def exported_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """A copy of the tiny checkpoint with its OpenVINO export beside it, written by ``python -m model export``
    (a copy: a bot given ``tiny_checkpoint`` must keep converting it with torch)."""
    import shutil

    from model.cli import main as model_cli

    checkpoint = tmp_path_factory.mktemp("exported") / "model.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    assert model_cli(["--threads", "2", "export", "--checkpoint", str(checkpoint)]) == 0
    return checkpoint


@pytest.fixture(scope="session")
def classifier(tiny_checkpoint):
    return load_classifier(tiny_checkpoint)


@pytest.fixture
def photo_jpeg() -> bytes:
    return image_bytes(make_photo())


@pytest.fixture
def seed_data() -> Path:
    if not SEED_DATA.is_dir():
        pytest.skip(f"{SEED_DATA} not present")
    return SEED_DATA
