"""Occlusion maps: the incremental engine equals the naive loop (borders, non-dividing patches) and captum."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devtools.samples import make_photo
from model import build_network, preprocess
from model.incremental import IncrementalOcclusion
from model.occlusion import (
    OcclusionExplainer,
    batched_occlusion_map,
    grid_positions,
    naive_occlusion_map,
    naive_probability_grid,
    occluded_batch,
)

TOLERANCE = 1e-4  # the contract: equal to the naive loop within 1e-4 in probability


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return preprocess(make_photo(320, 240, seed=1))


@pytest.fixture(scope="module")
def network(image) -> nn.Module:
    """A random-init ResNet50 whose head is centred on this image's features and made sensitive to them.

    A random head on random features gives a softmax that barely moves under occlusion; re-centring the
    first layer's bias at the clean image's features makes every change of the features show in the
    probabilities (the map spans ~0.3), so a 1e-4 tolerance is a real check.
    """
    torch.manual_seed(0)
    net = build_network(3, "none").eval()
    with torch.no_grad():
        features = net.backbone(image.unsqueeze(0))[0]
        first = net.head[0]
        first.weight.normal_(0, 5 / features.numel() ** 0.5)
        first.bias.copy_(-first.weight @ features)
    return net


@pytest.fixture(scope="module")
def target(network, image) -> int:
    with torch.no_grad():
        return int(network(image.unsqueeze(0)).argmax())


# (patch, stride): every setting reaches the bottom/right border or stops short of it with a patch size
# that does not divide 224, on a grid small enough for the naive loop.
FULL_GRIDS = [(16, 104), (15, 100), (56, 84), (7, 217)]


@pytest.mark.parametrize("patch,stride", FULL_GRIDS)
def test_incremental_map_equals_naive_loop(network, image, target, patch, stride):
    expected = naive_occlusion_map(network, image, target, patch, stride)
    result = OcclusionExplainer(network, patch=patch, stride=stride, method="incremental").explain(image, target)
    assert result.occlusion_map.dtype == np.float32
    assert result.occlusion_map.shape == expected.shape == (len(grid_positions(224, patch, stride)),) * 2
    assert np.abs(expected).max() > 10 * TOLERANCE  # the check below is meaningful
    np.testing.assert_allclose(result.occlusion_map, expected, atol=TOLERANCE, rtol=0)


def _naive_drop(network, image, target, patch, top, left) -> float:
    batch = torch.stack([image, occluded_batch(image, [(top, left)], patch)[0]])
    with torch.no_grad():
        probs = torch.softmax(network(batch), dim=1)[:, target]
    return float(probs[0] - probs[1])


@pytest.mark.parametrize("patch,stride", [(8, 4), (15, 7), (24, 10), (56, 28)])
def test_fine_grids_equal_naive_at_corners_edges_and_centre(network, image, target, patch, stride):
    starts = grid_positions(224, patch, stride)
    last = len(starts) - 1
    picks = [(0, 0), (0, last), (last, last), (last // 2, last // 2), (1, last - 1), (last, last // 3)]
    prepared = IncrementalOcclusion(network).prepare(image, patch, stride)
    clean = torch.softmax(prepared.clean_logits, dim=1)[0, target]
    drops = (clean - torch.softmax(prepared.logits(picks), dim=1)[:, target]).numpy()
    expected = [_naive_drop(network, image, target, patch, starts[r], starts[c]) for r, c in picks]
    np.testing.assert_allclose(drops, expected, atol=TOLERANCE, rtol=0)


def test_batched_equals_naive(network, image, target):
    expected = naive_occlusion_map(network, image, target, 112, 112)
    np.testing.assert_allclose(batched_occlusion_map(network, image, target, 112, 112, batch_size=3), expected,
                               atol=1e-5, rtol=0)


def _softmax_model(network):
    return lambda batch: torch.softmax(network(batch), dim=1)


def test_equals_captum_with_non_overlapping_windows(network, image, target):
    """With stride == patch every pixel lies in exactly one window, so captum's per-pixel attribution
    is that window's probability drop, comparable value for value."""
    from captum.attr import Occlusion

    patch = 56
    attribution = Occlusion(_softmax_model(network)).attribute(
        image.unsqueeze(0), sliding_window_shapes=(3, patch, patch), strides=(3, patch, patch), baselines=0,
        target=target, perturbations_per_eval=8,
    )[0]
    ours = OcclusionExplainer(network, patch=patch, stride=patch)(image, target)
    assert ours.shape == (4, 4)
    captum_map = attribution[0, ::patch, ::patch].numpy()
    np.testing.assert_allclose(ours, captum_map, atol=TOLERANCE, rtol=0)
    # And every pixel of each window carries that value, in all three channels.
    expanded = np.kron(ours, np.ones((patch, patch)))
    for channel in range(3):
        np.testing.assert_allclose(attribution[channel].numpy(), expanded, atol=TOLERANCE, rtol=0)


def test_equals_captum_with_overlapping_windows(network, image, target):
    """With overlap captum averages the drops of the windows covering each pixel; rebuild that average
    from our map and compare every pixel.

    Captum places ceil((224 - p) / s) + 1 windows per axis, the last one running past the border when s
    does not divide 224 - p; the definition stops at the last window that fits. The grids agree when s
    divides 224 - p, as here (80/48: windows at 0, 48, 96, 144)."""
    from captum.attr import Occlusion

    patch, stride = 80, 48
    attribution = Occlusion(_softmax_model(network)).attribute(
        image.unsqueeze(0), sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=0,
        target=target, perturbations_per_eval=8,
    )[0, 0].numpy()
    ours = OcclusionExplainer(network, patch=patch, stride=stride)(image, target)
    starts = grid_positions(224, patch, stride)
    total, count = np.zeros((224, 224)), np.zeros((224, 224))
    for row, top in enumerate(starts):
        for col, left in enumerate(starts):
            total[top : top + patch, left : left + patch] += ours[row, col]
            count[top : top + patch, left : left + patch] += 1
    rebuilt = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    assert (count == 4).any()  # pixels averaged over several windows are checked
    np.testing.assert_allclose(rebuilt, attribution, atol=TOLERANCE, rtol=0)


def test_default_target_is_the_predicted_class(network, image):
    result = OcclusionExplainer(network, patch=112, stride=112).explain(image)
    with torch.no_grad():
        probs = torch.softmax(network(image.unsqueeze(0)), dim=1)[0]
    assert result.target == int(probs.argmax())
    assert result.probability == pytest.approx(float(probs.max()), abs=1e-5)
    assert result.occlusion_map.shape == (2, 2)


def test_accepts_a_classifier_and_a_batch_of_one(classifier):
    tensor = classifier.preprocess(make_photo(seed=3))
    explainer = OcclusionExplainer(classifier, patch=112, stride=112)
    np.testing.assert_allclose(explainer(tensor.unsqueeze(0)), explainer(tensor), atol=0)


class TinyNet(nn.Module):
    """Not a ResNet: the incremental method must fall back to whole-network passes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_other_networks_fall_back_to_batched(image):
    torch.manual_seed(0)
    tiny = TinyNet().eval()
    result = OcclusionExplainer(tiny, patch=32, stride=48, method="incremental").explain(image)
    np.testing.assert_allclose(result.occlusion_map, naive_occlusion_map(tiny, image, result.target, 32, 48), atol=1e-6)


@pytest.mark.parametrize("patch,stride", [(0, 8), (225, 8), (16, 0)])
def test_bad_settings_are_rejected(image, patch, stride):
    with pytest.raises(ValueError):
        OcclusionExplainer(TinyNet().eval(), patch=patch, stride=stride).explain(image)


def test_bad_image_shape_and_target_are_rejected(image):
    explainer = OcclusionExplainer(TinyNet().eval(), patch=112, stride=112)
    with pytest.raises(ValueError):
        explainer(torch.zeros(1, 224, 224))
    with pytest.raises(ValueError):
        explainer(image, target=7)


def test_grid_positions_follow_the_definition():
    assert grid_positions(224, 16, 8) == list(range(0, 209, 8))  # 27 positions, the last touching the border
    assert len(grid_positions(224, 8, 4)) == 55
    assert grid_positions(224, 15, 7)[-1] == 203  # 203 + 15 = 218 <= 224 < 210 + 15
    assert len(grid_positions(224, 56, 28)) == 7


def test_with_settings_shares_the_folded_network_and_gives_the_same_map(network, image, target):
    coarse = OcclusionExplainer(network, patch=112, stride=56)
    other = coarse.with_settings(56, 84)
    assert other._engine is coarse._engine and (other.patch, other.stride) == (56, 84)
    assert (coarse.patch, coarse.stride) == (112, 56)
    fresh = OcclusionExplainer(network, patch=56, stride=84)
    np.testing.assert_allclose(other(image, target), fresh(image, target), atol=1e-6)
    with pytest.raises(ValueError):
        coarse.with_settings(0, 8)


def test_the_kept_grid_gives_every_other_class_map_without_inference(network, image, target):
    """The "why not …?" maps: the incremental engine's grid holds every class's probabilities (as the naive
    loop gives them), and ``for_target`` on one result equals explaining that class directly."""
    result = OcclusionExplainer(network, patch=56, stride=112).explain(image)
    assert result.probability_grid.shape == (3, 2, 2) and result.clean_probabilities.shape == (3,)
    assert result.top_classes(3)[0] == target
    naive_grid = naive_probability_grid(network, image, 56, 112)  # every class from one naive loop
    np.testing.assert_allclose(result.probability_grid, naive_grid, atol=TOLERANCE)
    for other in range(3):
        derived = result.for_target(other)
        np.testing.assert_allclose(derived.occlusion_map, result.clean_probabilities[other] - naive_grid[other],
                                   atol=TOLERANCE)
        assert derived.target == other and derived.probability == pytest.approx(float(result.clean_probabilities[other]))
    batched = OcclusionExplainer(network, patch=56, stride=112, method="batched")  # quicker on a 2 x 2 grid
    kept = batched.explain(image)
    for other in [k for k in range(3) if k != target]:
        np.testing.assert_array_equal(kept.for_target(other).occlusion_map, batched.explain(image, target=other).occlusion_map)
    with pytest.raises(ValueError):
        result.for_target(3)


def test_a_result_is_plain_numpy_and_pickles(network, image):
    import pickle

    result = OcclusionExplainer(network, patch=112, stride=112, method="batched").explain(image)
    assert all(isinstance(value, np.ndarray) for value in (result.occlusion_map, result.probability_grid,
                                                           result.clean_probabilities))
    again = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(again.for_target(1).occlusion_map, result.for_target(1).occlusion_map)
