"""The training functions on toy tensors: class weights, standardization folding, one epoch, evaluation."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from model.network import NetworkSpec, build_head
from training.train import Standardize, class_weights, evaluate, fold_standardization, train_one_epoch


def test_class_weights_are_inverse_frequency_averaging_one_per_sample():
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 4)  # the seed photos' 10/6/4
    weights = class_weights(labels, 3)
    assert torch.allclose(weights * torch.tensor([10.0, 6.0, 4.0]), torch.full((3,), 20 / 3))
    assert torch.isclose((weights[labels]).mean(), torch.tensor(1.0))
    assert weights[2] > weights[1] > weights[0]


def test_folding_the_standardization_into_the_head_gives_the_same_logits():
    torch.manual_seed(0)
    features = torch.randn(50, 2048) * 30 + 10
    standardize = Standardize.fit(features)
    head = build_head(NetworkSpec(num_classes=4))
    expected = head(standardize(features))
    fold_standardization(head, standardize)
    assert torch.allclose(head(features), expected, atol=1e-4, rtol=1e-4)


def test_standardize_survives_a_constant_feature():
    features = torch.randn(20, 8)
    features[:, 3] = 5.0
    out = Standardize.fit(features)(torch.randn(4, 8))
    assert torch.isfinite(out).all()


def test_train_one_epoch_and_evaluate_learn_a_separable_problem():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(40, 2) + 3, torch.randn(40, 2) - 3])
    y = torch.tensor([0] * 40 + [1] * 40)
    model = nn.Linear(2, 2)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    before = evaluate(model, criterion, DataLoader(TensorDataset(x, y), batch_size=32))
    stats = [train_one_epoch(model, criterion, optimizer, loader) for _ in range(5)]
    after = evaluate(model, criterion, DataLoader(TensorDataset(x, y), batch_size=32))
    assert stats[-1].loss < stats[0].loss
    assert after.loss < before.loss and after.accuracy == 1.0
    assert torch.equal(after.targets, y) and after.probabilities.shape == (80, 2)
    assert torch.allclose(after.probabilities.sum(dim=1), torch.ones(80))
