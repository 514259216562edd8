"""The frozen TorchScript graph that serves classifications: same probabilities as the eager network at
any batch size, no return to the Python modules during a forward pass, and the eager network kept
wherever a graph cannot be trusted."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from devtools.samples import make_photo
from model import load_classifier
from model.graph import freeze_graph


def test_graph_gives_the_eager_probabilities_at_every_batch_size(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    batch = torch.stack([classifier.preprocess(make_photo(seed=i)) for i in range(5)])
    eager = [classifier.probabilities(batch[:n]) for n in (1, 2, 5)]
    assert classifier.graph is None
    assert classifier.use_frozen_graph()
    assert isinstance(classifier.graph, torch.jit.ScriptModule)
    for n, expected in zip((1, 2, 5), eager):
        assert torch.allclose(classifier.probabilities(batch[:n]), expected, atol=1e-5)


def test_graph_runs_without_the_python_modules(tiny_checkpoint):
    # The point of the graph: one call into C++ per batch, not a Python module call per layer (each of
    # which took the GIL back from the bot's event loop).
    classifier = load_classifier(tiny_checkpoint)
    calls = []
    for module in classifier.network.modules():
        module.register_forward_hook(lambda *args: calls.append(1))
    batch = classifier.preprocess(make_photo()).unsqueeze(0)
    classifier.probabilities(batch)
    eager_calls = len(calls)
    assert eager_calls > 100  # ResNet50: convs, ReLUs, blocks, ...
    assert classifier.use_frozen_graph()  # tracing itself runs the modules once
    calls.clear()
    classifier.probabilities(batch)
    assert calls == []


class BranchesOnItsInput(nn.Module):
    """Takes a different path for an all-zero input: tracing (with a zero example) records only one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if bool(x.abs().max() == 0):
            return torch.zeros(x.shape[0], 4)
        return self.conv(x).mean(dim=(2, 3))


def test_a_graph_that_disagrees_is_not_used(caplog):
    with caplog.at_level(logging.WARNING, logger="model.graph"):
        assert freeze_graph(BranchesOnItsInput().eval(), side=16) is None
    assert "eager" in caplog.text


def test_no_torchscript_means_eager(tiny_checkpoint, monkeypatch, caplog):
    classifier = load_classifier(tiny_checkpoint)

    def missing(*args, **kwargs):
        raise RuntimeError("TorchScript is not available")

    monkeypatch.setattr(torch.jit, "trace", missing)
    with caplog.at_level(logging.WARNING, logger="model.graph"):
        assert not classifier.use_frozen_graph()
    assert "TorchScript is not available" in caplog.text and classifier.graph is None
    assert classifier.probabilities(classifier.preprocess(make_photo()).unsqueeze(0)).shape == (1, 3)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval"):
        freeze_graph(nn.Conv2d(3, 3, 1).train())
