"""The feature cache: computed once, reused while nothing changes, recomputed when the data or settings do."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from training_synthetic import synthetic_photo, write_split_folders

import training.features as features_module
from model.network import build_network
from training.augment import AugmentConfig
from training.data import load_dataset
from training.features import FeatureSettings, cached_features

SETTINGS = FeatureSettings(copies=1, seed=0)


def features_for(backbone, data, cache_dir, settings=SETTINGS):
    dataset = load_dataset(data)
    return cached_features(backbone, dataset.train, dataset.test, settings, cache_dir)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_network(2, "none").backbone.eval()


@pytest.fixture(scope="module")
def warm(backbone, tmp_path_factory):
    """One photo per class and split, with its features already cached: (data, cache, features)."""
    root = tmp_path_factory.mktemp("cache")
    data = write_split_folders(root / "data", train=1, test=1, classes=("checks", "stripes"))
    first = features_for(backbone, data, root / "cache")
    assert not first.from_cache and first.path.is_file()
    return data, root / "cache", first


@pytest.fixture
def copied(warm, tmp_path):
    """A copy of the warm data and cache that a test may change."""
    data, cache, first = warm
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "data", tmp_path / "cache", first


@pytest.fixture
def compute_calls(monkeypatch):
    """Counts the real feature computations behind ``cached_features``."""
    calls = []
    real = features_module.compute_features

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "compute_features", counting)
    return calls


def test_a_second_run_reads_the_cache_instead_of_computing(backbone, warm, compute_calls):
    data, cache, first = warm
    assert first.train.shape == (2, 2048) and first.test.shape == (2, 2048)
    mtime = first.path.stat().st_mtime_ns
    second = features_for(backbone, data, cache)
    assert second.from_cache and compute_calls == []
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert torch.equal(second.train, first.train) and torch.equal(second.test_labels, first.test_labels)


def test_the_key_follows_content_not_paths_and_changed_photos_invalidate_it(backbone, copied, compute_calls):
    data, cache, first = copied
    assert features_for(backbone, data, cache).from_cache  # moved folders, same photos: still valid
    victim = next((data / "train" / "checks").iterdir())
    synthetic_photo("checks", 4242).save(victim)  # same name, new content
    second = features_for(backbone, data, cache)
    assert not second.from_cache and second.key != first.key and len(compute_calls) == 1
    assert not torch.equal(second.train, first.train)


@pytest.mark.parametrize(
    "change",
    [lambda s: replace(s, copies=2), lambda s: replace(s, seed=1), lambda s: replace(s, augment=AugmentConfig(invert_p=0.5)),
     lambda s: replace(s, precision="bf16")],
    ids=["copies", "seed", "augmentation", "precision"],
)
def test_changed_settings_invalidate_the_cache(backbone, copied, compute_calls, change):
    data, cache, first = copied
    second = features_for(backbone, data, cache, change(SETTINGS))
    assert not second.from_cache and second.key != first.key and len(compute_calls) == 1


def test_other_backbone_weights_invalidate_the_cache(copied, compute_calls):
    data, cache, first = copied
    torch.manual_seed(1)
    other = build_network(2, "none").backbone.eval()
    second = features_for(other, data, cache)
    assert not second.from_cache and second.key != first.key and len(compute_calls) == 1


def test_a_damaged_cache_file_is_recomputed(backbone, copied, compute_calls):
    data, cache, first = copied
    damaged = cache / first.path.name
    damaged.write_bytes(damaged.read_bytes()[:100])
    second = features_for(backbone, data, cache)
    assert not second.from_cache and len(compute_calls) == 1
    assert torch.equal(second.train, first.train)  # recomputed: the same values
    assert features_for(backbone, data, cache).from_cache
