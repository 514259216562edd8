"""bf16 heat maps next to fp32 ones on a model trained on the synthetic separable classes, whose maps have a
real probability spread (a random-init model's are flat)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model import load_classifier
from model.occlusion import BF16_MAP_NOISE, BF16_MAP_TOLERANCE, OcclusionExplainer
from model.openvino_runtime import openvino_version
from model.runtime import prepare_model


@pytest.fixture(scope="module")
def trained(learned_run):
    _, result = learned_run
    classifier = load_classifier(result.checkpoint)
    photos = sorted(p for p in (result.checkpoint.parents[1] / "data").rglob("*.png"))
    return classifier, [classifier.preprocess(classifier.open(p)) for p in photos[::11]]


def test_bf16_map_is_within_the_documented_tolerance_of_fp32(trained):
    classifier, images = trained
    fp32 = OcclusionExplainer(classifier.network, patch=56, stride=28)
    bf16 = OcclusionExplainer(classifier.network, patch=56, stride=28, precision="bf16")
    spreads, redone = [], 0
    for image in images:
        target = int(classifier.probabilities(image[None])[0].argmax())
        reference, candidate = fp32(image, target), bf16(image, target)
        assert np.abs(candidate - reference).max() <= BF16_MAP_TOLERANCE
        spreads.append(float(np.ptp(reference)))
        redone += float(np.ptp(candidate)) < BF16_MAP_NOISE
    assert max(spreads) > 5 * BF16_MAP_TOLERANCE  # some maps mean something, so the check above had teeth
    assert redone < len(images)


def test_a_flat_bf16_map_is_redone_in_fp32(trained, caplog):
    classifier, _ = trained
    blank = torch.zeros(3, 224, 224)  # the mean colour everywhere: occluding it with the mean changes nothing
    fp32 = OcclusionExplainer(classifier.network, patch=112, stride=112)(blank)
    with caplog.at_level(logging.INFO, logger="model.occlusion"):
        bf16 = OcclusionExplainer(classifier.network, patch=112, stride=112, precision="bf16")(blank)
    assert "within bf16 noise" in caplog.text
    np.testing.assert_array_equal(bf16, fp32)  # the fp32 map itself


@pytest.mark.skipif(openvino_version() is None, reason="OpenVINO is not installed")
def test_the_bots_explainer_on_openvino_bf16_agrees_with_fp32(trained, tmp_path):
    classifier, images = trained
    served = load_classifier(classifier.metadata["path"])
    prepare_model(served, False, precision="bf16", runtime="openvino", cache_dir=tmp_path)
    explainer = OcclusionExplainer.for_classifier(served, 56, 28)
    image = images[-1]
    target = int(classifier.probabilities(image[None])[0].argmax())
    reference = OcclusionExplainer(classifier.network, patch=56, stride=28)(image, target)
    with torch.inference_mode():
        assert np.abs(explainer(image, target) - reference).max() <= BF16_MAP_TOLERANCE
