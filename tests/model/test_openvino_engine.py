"""The OpenVINO export (model/export.py) and the torch-free engine on it (model/openvino_engine.py): the same
answers and maps as torch, a stale or tampered export refused, and no torch in a process that serves it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.samples import image_bytes, make_photo
from model import load_classifier
from model.engines import load_engine
from model.export_manifest import ExportUnusable, export_dir, file_sha256, read_export, verify_files
from model.occlusion import OcclusionExplainer
from model.openvino_engine import OpenVINOEngine, compile_ir
from model.precision_rule import Capability

REPO = Path(__file__).resolve().parents[2]
NOT_NATIVE = Capability(False, "simulated: no native bf16")
NATIVE = Capability(True, "simulated: native bf16")


@pytest.fixture
def exported(exported_checkpoint) -> Path:
    return exported_checkpoint


def engine_on(checkpoint: Path, precision: str = "fp32", capability: Capability = NOT_NATIVE) -> OpenVINOEngine:
    engine = OpenVINOEngine(read_export(export_dir(checkpoint), file_sha256(checkpoint)), precision, capability=capability)
    engine.prepare(workers=1, threads=2, probe_batch=2)
    return engine


def test_the_manifest_names_the_checkpoint_the_files_and_the_probe(exported, capfd):
    manifest = json.loads((export_dir(exported) / "manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] == file_sha256(exported)
    assert manifest["class_names"] == load_classifier(exported).class_names
    assert set(manifest["ir"]) == {"fp32", "bf16"} and manifest["openvino"]
    for entry in manifest["ir"].values():
        assert file_sha256(export_dir(exported) / entry["bin"]) == entry["bin_sha256"]
        assert file_sha256(export_dir(exported) / entry["xml"]) == entry["xml_sha256"]
    assert manifest["probe"]["fp32"]["top1_agree"] and manifest["probe"]["fp32"]["max_difference"] < 1e-4
    assert {"top1_agree", "max_difference", "ms_per_photo"} <= set(manifest["probe"]["bf16"])
    assert sorted(path.name for path in export_dir(exported).iterdir()) == sorted(
        ["manifest.json"] + [entry[key] for entry in manifest["ir"].values() for key in ("xml", "bin")]
        + [manifest["incremental"][key] for key in ("npz", "json")])


def test_it_classifies_and_maps_as_the_torch_network_does_and_keeps_the_whole_grid(exported):
    engine, classifier = engine_on(exported), load_classifier(exported)
    image = engine.decode(image_bytes(make_photo()))
    assert image.shape == (3, 224, 224) and image.dtype == np.float32
    with torch.inference_mode():
        expected = classifier.probabilities(torch.from_numpy(image)[None]).numpy()
    np.testing.assert_allclose(engine.probabilities(image[None]), expected, atol=1e-4)
    result = engine.explainer(56, 28, 4).explain(image)
    reference = OcclusionExplainer(classifier, 56, 28, 4, method="batched").explain(torch.from_numpy(image))
    assert result.target == reference.target and result.probability_grid.shape == (3, 7, 7)
    np.testing.assert_allclose(result.occlusion_map, reference.occlusion_map, atol=1e-4)
    other = (result.target + 1) % 3  # "Why not …?" from the kept grid, no inference
    np.testing.assert_allclose(result.for_target(other).occlusion_map,
                               reference.for_target(other).occlusion_map, atol=1e-4)


def test_bf16_maps_stay_within_the_bf16_bound_of_fp32(exported):
    image = engine_on(exported).decode(image_bytes(make_photo()))
    fp32 = engine_on(exported, "fp32").explainer(56, 28, 8).explain(image)
    bf16 = engine_on(exported, "bf16").explainer(56, 28, 8).explain(image, fp32.target)
    assert np.abs(bf16.occlusion_map - fp32.occlusion_map).max() <= 0.015


def test_auto_uses_the_rule_fp32_without_native_bf16_and_the_manifests_agreement_with(exported):
    assert engine_on(exported, "auto", NOT_NATIVE).precision == "fp32"
    engine = engine_on(exported, "auto", NATIVE)
    reason = engine.preparation.precision_reason
    assert "probe: top-1" in reason and engine.precision in ("fp32", "bf16")
    recorded = json.loads((export_dir(exported) / "manifest.json").read_text())["probe"]["bf16"]["max_difference"]
    assert f"max prob diff {recorded:.4f}" in reason


def copy_of(exported: Path, folder: Path) -> Path:
    checkpoint = folder / "model.pt"
    shutil.copy(exported, checkpoint)
    shutil.copytree(export_dir(exported), export_dir(checkpoint))
    return checkpoint


def test_a_tampered_ir_is_never_compiled_nor_chosen(exported, tmp_path):
    checkpoint = copy_of(exported, tmp_path)
    export = read_export(export_dir(checkpoint), file_sha256(checkpoint))
    weights = export.ir["fp32"].bin
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportUnusable, match="does not match its manifest"):
        verify_files(export)
    with pytest.raises(ExportUnusable, match="does not match its manifest"):
        compile_ir(export.ir["fp32"], threads=1)


def test_a_stale_or_missing_export_is_refused_with_its_reason(exported, tmp_path):
    checkpoint = copy_of(exported, tmp_path)
    with pytest.raises(ExportUnusable, match="stale"):
        read_export(export_dir(checkpoint), "0" * 64)
    shutil.rmtree(export_dir(checkpoint))
    with pytest.raises(ExportUnusable, match="no export"):
        read_export(export_dir(checkpoint), file_sha256(checkpoint))


def test_the_loader_picks_the_export_on_a_cpu_and_torch_where_asked(exported, tmp_path, caplog):
    engine, why = load_engine(exported, device="cpu")
    assert isinstance(engine, OpenVINOEngine) and "no torch" in why
    pytest.importorskip("model.torch_engine", reason="the torch adapter (model/torch_engine.py) is not merged yet")
    for settings in ({"runtime": "torch", "device": "cpu"}, {"device": "cuda"}):
        engine, why = load_engine(exported, **settings)
        assert not isinstance(engine, OpenVINOEngine) and why.startswith("torch:")
    stale = copy_of(exported, tmp_path)
    stale.write_bytes(stale.read_bytes() + b"\0")  # another file: the export no longer belongs to it
    engine, why = load_engine(stale, device="cpu")
    assert not isinstance(engine, OpenVINOEngine) and "stale" in why and "stale" in caplog.text


SERVING_WITHOUT_TORCH = textwrap.dedent("""
    import sys
    from devtools.samples import image_bytes, make_photo
    from model.engines import load_engine
    from model.render import render_overlay
    from model.preprocess import open_image
    import bot.app, bot.config, bot.ops.stats, bot.inference.reload, bot.inference.canary  # what a serving bot imports before its model

    engine, why = load_engine(sys.argv[1], device="cpu")
    engine.prepare(workers=1, threads=2, probe_batch=2)
    data = image_bytes(make_photo())
    image = engine.decode(data)
    probabilities = engine.probabilities(image[None])
    result = engine.explainer(112, 56, 4).explain(image)
    why_not = result.for_target(result.top_classes(2)[1])
    png = render_overlay(open_image(data), why_not.occlusion_map, engine.class_names[why_not.target], why_not.probability,
                         preprocess_config=engine.preprocess_config, patch=112, stride=56)
    assert png.startswith(b"\\x89PNG"), "no PNG"
    loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
    print("torch modules:", loaded)
    sys.exit(3 if loaded else 0)
""")


def test_serving_on_the_export_never_imports_torch(exported):
    """Classify, map and draw a "Why not …?" on the export in a fresh process: torch must not be loaded."""
    process = subprocess.run([sys.executable, "-c", SERVING_WITHOUT_TORCH, str(exported)], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "torch modules: []" in process.stdout
