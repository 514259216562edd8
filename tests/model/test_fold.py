"""Folding BatchNorm into convolutions at load: same probabilities, no BatchNorm left, weights shared with
the heat-map explainer, and a network whose order does not allow folding is served as it was."""
from __future__ import annotations

import torch
from torch import nn

from devtools.samples import make_photo
from model import load_classifier
from model.checkpoint import load_checkpoint
from model.fold import fold_batch_norms
from model.occlusion import OcclusionExplainer


def test_loaded_classifier_is_folded_and_agrees_with_the_checkpoint(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    unfolded = load_checkpoint(tiny_checkpoint).network.eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in classifier.network.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) == 53  # ResNet50
    batch = torch.stack([classifier.preprocess(make_photo(seed=i)) for i in range(3)])
    with torch.inference_mode():
        expected = torch.softmax(unfolded(batch), dim=1)
    assert torch.allclose(classifier.probabilities(batch), expected, atol=1e-5)


def test_explainer_shares_the_folded_weights(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    explainer = OcclusionExplainer(classifier, method="incremental")
    first_conv = explainer._engine.plan.stem[0]
    stem_conv = classifier.network.backbone.conv1
    assert first_conv.weight.data_ptr() == stem_conv.weight.data_ptr()  # no second copy of the network


class BatchNormBeforeConv(nn.Module):
    """Registers conv then bn, but applies bn first: folding by registration order would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 2)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_a_network_folding_would_change_is_served_unfolded():
    network = BatchNormBeforeConv().eval()
    assert fold_batch_norms(network) is network
