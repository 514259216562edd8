"""Device, runtime and precision choices (model.precision, model.runtime): the auto rule, its probe, the
OpenVINO cache, clear errors, and bf16 answers next to fp32's on real photos."""
from __future__ import annotations

import pytest
import torch

from devtools.samples import make_photo
from model import load_classifier
from model.cli import main as model_cli
from model.openvino_runtime import cache_key, openvino_version
from model.precision import (
    PROBE_TOLERANCE,
    Capability,
    DeviceUnavailable,
    ProbeResult,
    bf16_capability,
    choose_precision,
    compare_outputs,
    resolve_device,
)
from model.runtime import ModelPreparation, prepare_model

NATIVE = Capability(True, "simulated native bf16")
NOT_NATIVE = Capability(False, "simulated CPU without AMX or AVX-512 BF16")
needs_openvino = pytest.mark.skipif(openvino_version() is None, reason="OpenVINO is not installed")


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "photo.jpg"
    make_photo(360, 240, seed=5).save(path, quality=92)
    return path


def test_capability_follows_the_cpu_flags():
    assert bf16_capability("cpu", ["avx2", "amx_bf16"]).native_bf16
    assert bf16_capability("cpu", ["avx512f", "avx512_bf16"]).native_bf16
    emulated = bf16_capability("cpu", ["avx2", "avx512f", "fma"])
    assert not emulated.native_bf16 and "AMX" in emulated.evidence


def test_auto_picks_fp32_without_native_bf16_and_never_probes():
    def probe():
        raise AssertionError("no probe without native bf16")

    choice = choose_precision("auto", NOT_NATIVE, probe)
    assert (choice.precision, choice.dtype) == ("fp32", torch.float32) and NOT_NATIVE.evidence in choice.reason


@pytest.mark.parametrize("probe, expected, words", [
    (ProbeResult(False, 0.004, 30.0, 6.0), "fp32", "disagreed"),  # another top-1 class
    (ProbeResult(True, 0.05, 30.0, 6.0), "fp32", "disagreed"),  # probabilities too far apart
    (ProbeResult(True, 0.004, 30.0, 29.0), "fp32", "not faster"),  # within the noise margin
    (ProbeResult(True, 0.004, 30.0, 6.0), "bf16", "agreed"),
])
def test_auto_needs_agreement_and_speed(probe, expected, words):
    choice = choose_precision("auto", NATIVE, lambda: probe)
    assert choice.precision == expected and words in choice.reason and choice.probe == probe


def test_forced_precisions_are_taken_as_asked_and_bad_values_are_refused():
    assert choose_precision("fp32", NATIVE).precision == "fp32"
    slow = choose_precision("bf16", NOT_NATIVE)
    assert slow.precision == "bf16" and "slower" in slow.reason
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        choose_precision("fp16", NATIVE)


def test_compare_outputs_counts_only_decided_top1_swaps():
    reference = torch.tensor([[0.70, 0.20, 0.10], [0.405, 0.395, 0.20]])
    swapped_tie = torch.tensor([[0.70, 0.20, 0.10], [0.398, 0.402, 0.20]])
    assert compare_outputs(reference, swapped_tie) == (True, pytest.approx(0.007))
    swapped = torch.tensor([[0.30, 0.60, 0.10], [0.405, 0.395, 0.20]])
    assert compare_outputs(reference, swapped)[0] is False


def test_device_errors_are_clear():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        return
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_refuses_cuda_without_a_gpu_and_unknown_precisions(tiny_checkpoint, photo_path, capsys):
    with pytest.raises(SystemExit) as info:
        model_cli(["predict", "--checkpoint", str(tiny_checkpoint), "--device", "cuda", str(photo_path)])
    assert info.value.code == 2 and "--device cuda" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        model_cli(["explain", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16", str(photo_path), "-o",
                   str(photo_path.with_suffix(".png"))])
    assert info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_prepare_without_native_bf16_serves_the_fp32_network(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    preparation = prepare_model(classifier, False, precision="auto", runtime="torch", capability=NOT_NATIVE)
    assert (preparation.precision, preparation.runtime, classifier.runner) == ("fp32", "torch", None)
    assert "precision fp32" in preparation.describe() and NOT_NATIVE.evidence in preparation.describe()


def test_prepare_on_native_bf16_runs_the_probe_and_keeps_what_it_says(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    preparation = prepare_model(classifier, False, probe_batch=2, precision="auto", runtime="torch", capability=NATIVE)
    assert "probe: top-1" in preparation.precision_reason
    assert (classifier.runner is not None) == (preparation.precision == "bf16")
    batch = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    reference = load_classifier(tiny_checkpoint).probabilities(batch)
    assert (classifier.probabilities(batch) - reference).abs().max() <= PROBE_TOLERANCE


def test_describe_names_runtime_precision_and_reason():
    text = ModelPreparation("eager", "FROZEN_GRAPH=0", precision="bf16", precision_reason="auto: faster",
                            runtime="openvino", runtime_reason="auto: faster here").describe()
    assert text.startswith("eager: FROZEN_GRAPH=0") and "runtime openvino" in text and "precision bf16 (auto: faster)" in text


def test_openvino_cache_key_changes_with_every_input():
    base = cache_key("abc", "fp32", 224, "2026.4")
    assert len({base, cache_key("abc", "bf16", 224, "2026.4"), cache_key("abd", "fp32", 224, "2026.4"),
                cache_key("abc", "fp32", 192, "2026.4"), cache_key("abc", "fp32", 224, "2026.5")}) == 5


@needs_openvino
def test_openvino_is_converted_once_into_data_files_and_read_back(tiny_checkpoint, converted):
    classifier = load_classifier(tiny_checkpoint)
    first = prepare_model(classifier, False, precision="bf16", runtime="openvino", cache_dir=converted)
    assert first.runtime == "openvino" and "converted into" in first.runtime_reason
    # IR and its hashes only: no code, no pickles
    assert sorted(p.suffix for p in converted.iterdir()) == [".bin", ".json", ".xml"]
    again = load_classifier(tiny_checkpoint)
    second = prepare_model(again, False, precision="bf16", runtime="openvino", cache_dir=converted)
    assert "cache" in second.runtime_reason and "converted" not in second.runtime_reason
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    agree, difference = compare_outputs(load_classifier(tiny_checkpoint).probabilities(batch), again.probabilities(batch))
    assert agree and difference <= PROBE_TOLERANCE


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One OpenVINO cache folder for the module's tests: each precision is converted once."""
    return tmp_path_factory.mktemp("openvino")


def _seed_photos(seed_data):
    return sorted(p for p in seed_data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.mark.parametrize("runtime", ["torch", pytest.param("openvino", marks=needs_openvino)])
def test_bf16_agrees_with_fp32_on_the_seed_photos(tiny_checkpoint, seed_data, runtime, converted):
    reference, candidate = load_classifier(tiny_checkpoint), load_classifier(tiny_checkpoint)
    prepare_model(candidate, False, precision="bf16", runtime=runtime, cache_dir=converted)
    assert candidate.precision == "bf16" and candidate.runtime == runtime
    photos = _seed_photos(seed_data)
    batch = torch.stack([reference.preprocess(reference.open(p)) for p in photos])
    agree, difference = compare_outputs(reference.probabilities(batch), candidate.probabilities(batch))
    assert agree and difference <= PROBE_TOLERANCE, (len(photos), difference)
