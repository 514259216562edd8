"""Checkpoints: round trip, metadata, safe loading, and a one-line error for every kind of bad file."""
from __future__ import annotations

import pytest
import torch

from model import CheckpointError, build_network, load_checkpoint, load_classifier, save_checkpoint
from model.checkpoint import read_checkpoint_dict
from model.network import NetworkSpec, ProductNet, freeze_backbone


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(1)
    network = build_network(4, "none").eval()
    path = save_checkpoint(
        tmp_path / "m.pt",
        network,
        ["a", "b", "c", "d"],
        training={"epochs": 3, "weights": "none"},
        metrics={"test_accuracy": 0.75, "per_class": {"a": {"precision": 1.0}}},
    )
    loaded = load_checkpoint(path)
    assert loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.training["epochs"] == 3
    assert loaded.metrics["per_class"]["a"]["precision"] == 1.0
    assert loaded.versions["torch"] == str(torch.__version__)
    assert loaded.created_at and len(loaded.sha256) == 64
    batch = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(network(batch), loaded.network(batch))


def test_checkpoint_is_plain_data(tiny_checkpoint):
    data = torch.load(tiny_checkpoint, weights_only=True)
    assert data["arch"] == "resnet50" and data["head_sizes"] == [512, 64]
    assert data["preprocess"]["crop"] == 224


def test_head_has_the_seed_shape():
    network = build_network(7, "none")
    linears = [m for m in network.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 512), (512, 64), (64, 7)]
    freeze_backbone(network)
    assert not any(p.requires_grad for p in network.backbone.parameters())
    freeze_backbone(network, "layer4")
    trainable = {n.split(".")[0] for n, p in network.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*make train"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a product-id checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_truncated_file(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")


def test_other_architecture_and_mismatched_weights(tiny_checkpoint, tmp_path):
    data = torch.load(tiny_checkpoint, weights_only=True)
    data["arch"] = "vit_b_16"
    torch.save(data, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="architecture 'vit_b_16'"):
        load_checkpoint(tmp_path / "vit.pt")
    data = torch.load(tiny_checkpoint, weights_only=True)
    data["class_names"] = ["only", "two"]  # the head has 3 outputs
    torch.save(data, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "mismatch.pt")


class Payload:
    """Unpickling this would run code: a checkpoint holding it must be refused."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_code_in_a_checkpoint_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "product-id-checkpoint", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        read_checkpoint_dict(path)
    assert "code ran" not in capsys.readouterr().out


def test_save_refuses_mismatched_class_names(tmp_path):
    network = ProductNet(NetworkSpec(num_classes=3))
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "m.pt", network, ["a", "b"])
    assert not list(tmp_path.iterdir()), "nothing is written when saving fails"


@pytest.mark.parametrize("num_classes", [2, 5, 11])
def test_any_number_of_classes(tmp_path, num_classes):
    names = [f"class{i}" for i in range(num_classes)]
    save_checkpoint(tmp_path / "m.pt", build_network(num_classes, "none").eval(), names)
    classifier = load_classifier(tmp_path / "m.pt")
    probabilities = classifier.probabilities(torch.randn(3, 3, 224, 224))
    assert probabilities.shape == (3, num_classes)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3), atol=1e-5)
    assert (probabilities >= 0).all()
