"""Backbone weights: none, a local file, and a clear message when the ImageNet download is impossible."""
from __future__ import annotations

import pytest
import torch
from torchvision import models

from model.network import WeightsError, imagenet_weights_file, load_backbone


def test_no_weights_is_random_init():
    torch.manual_seed(0)
    a = load_backbone("none")
    torch.manual_seed(1)
    b = load_backbone("none")
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_local_weights_file(tmp_path):
    reference = models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    loaded = load_backbone(str(tmp_path / "resnet50.pth"))
    assert torch.equal(loaded.conv1.weight, reference.conv1.weight)


def test_bad_local_weights(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_backbone(str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="not a torchvision ResNet50"):
        load_backbone(str(tmp_path / "wrong.pth"))


def test_failed_download_names_the_file_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    # The download goes through torch.hub; make it fail without touching the network.
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    with pytest.raises(WeightsError) as info:
        load_backbone("imagenet")
    message = str(info.value)
    expected = imagenet_weights_file()
    assert str(tmp_path) in str(expected)
    assert str(expected) in message and "WEIGHTS=none" in message
    assert "\n" not in message
