"""The OpenVINO async-queue occlusion grid equals the naive loop; a bf16 map's precision is decided once
(model/map_precision.py), so no map is computed twice."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devtools.samples import make_photo
from model.map_precision import COARSE_MARGIN, CoarseRanges, decide
from model.network import build_network
from model.occlusion import BF16_MAP_NOISE, OcclusionExplainer, naive_probability_grid
from model.openvino_runtime import openvino_version
from model.preprocess import preprocess

needs_openvino = pytest.mark.skipif(openvino_version() is None, reason="OpenVINO is not installed")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return preprocess(make_photo(320, 240, seed=1))


@pytest.fixture(scope="module")
def network(image) -> nn.Module:
    """As in test_occlusion.py: a random-init ResNet50 whose head is made sensitive to this image."""
    torch.manual_seed(0)
    net = build_network(3, "none").eval()
    with torch.no_grad():
        features = net.backbone(image.unsqueeze(0))[0]
        first = net.head[0]
        first.weight.normal_(0, 5 / features.numel() ** 0.5)
        first.bias.copy_(-first.weight @ features)
    return net


class CountingForward:
    """A forward pass that counts the positions it is given (the clean pass is one)."""

    def __init__(self, network: nn.Module):
        self.network, self.images = network, 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.images += batch.shape[0]
        return self.network(batch)


@needs_openvino
@pytest.mark.parametrize("requests,batch", [(1, 5), (2, 16), (3, 7)])
def test_openvino_async_grid_equals_the_naive_loop(network, image, requests, batch):
    from model.openvino_occlusion import OpenVINOOcclusion
    from model.openvino_runtime import load_or_convert

    model, _ = load_or_convert(network, "", "fp32", 224, None)
    engine = OpenVINOOcclusion(model, "fp32", threads=2, streams=1, requests=requests)
    grid = engine.probability_grid(image.numpy(), 56, 42, batch)
    reference = naive_probability_grid(engine, image, 56, 42)  # the same compiled model, batch 1
    torch_reference = naive_probability_grid(network, image, 56, 42)
    assert grid.shape == reference.shape == (3, 5, 5)
    np.testing.assert_allclose(grid, reference, atol=1e-4)  # the contract (test_occlusion.TOLERANCE): batch shapes round differently
    np.testing.assert_allclose(grid, torch_reference, atol=1e-4)
    assert np.ptp(grid) > 0.05  # the map moves: the comparison has teeth


@needs_openvino
def test_the_explainer_uses_the_async_grid_and_equals_batched(network, image):
    from model.openvino_occlusion import OpenVINOOcclusion
    from model.openvino_runtime import load_or_convert

    model, _ = load_or_convert(network, "", "fp32", 224, None)
    fast = OcclusionExplainer(network, 56, 42, 8, method="batched", forward=OpenVINOOcclusion(model, "fp32"))
    np.testing.assert_allclose(fast(image), OcclusionExplainer(network, 56, 42, 8, method="batched")(image), atol=1e-4)


def test_the_rule_decides_from_the_coarse_range():
    assert decide("fp32", 0.0, 56, BF16_MAP_NOISE).precision == "fp32"
    assert decide("bf16", BF16_MAP_NOISE * COARSE_MARGIN * 0.9, 56, BF16_MAP_NOISE).precision == "fp32"
    assert decide("bf16", BF16_MAP_NOISE * COARSE_MARGIN * 1.1, 56, BF16_MAP_NOISE).precision == "bf16"


def test_coarse_ranges_keep_the_coarsest_level():
    ranges = CoarseRanges(kept=2)
    ranges.record("a", 0, 56, 0.4)
    ranges.record("a", 0, 16, 0.1)  # finer: does not replace the coarse level
    assert ranges.coarser_than("a", 0, 16) == (56, 0.4)
    assert ranges.coarser_than("a", 0, 56) is None  # not coarser than itself
    ranges.record("b", 0, 56, 0.2)
    ranges.record("c", 0, 56, 0.2)
    assert ranges.coarser_than("a", 0, 16) is None  # the oldest image was dropped


def test_a_flat_map_asked_in_bf16_is_computed_once_in_fp32(network):
    blank = torch.zeros(3, 224, 224)  # occluding the mean colour with itself changes nothing: a flat map
    counting = CountingForward(network)
    explainer = OcclusionExplainer(network, 56, 56, 16, method="batched", precision="bf16", forward=counting)
    result = explainer.explain(blank)
    assert counting.images == 1 + 4  # the clean pass and the quadrant probe: no bf16 grid
    fp32 = OcclusionExplainer(network, 56, 56, 16, method="batched").explain(blank, result.target)
    np.testing.assert_array_equal(result.occlusion_map, fp32.occlusion_map)


def test_a_map_with_range_stays_in_bf16_and_its_fine_level_needs_no_probe(network, image):
    counting = CountingForward(network)
    coarse = OcclusionExplainer(network, 56, 84, 16, method="batched", precision="bf16", forward=counting)
    result = coarse.explain(image)
    assert np.abs(result.occlusion_map).max() > BF16_MAP_NOISE * COARSE_MARGIN
    assert coarse._fp32 is None  # never computed in fp32
    positions = 3 * 3
    assert counting.images == 1 + 4 + 1 + positions  # clean, probe, then the map's own clean pass and grid
    fine = coarse.with_settings(16, 104)
    counting.images = 0
    fine.explain(image, result.target)
    assert counting.images == 1 + 3 * 3  # decided from the coarse map: no probe, no second map
    assert fine._fp32 is None


def test_adaptive_mode_is_off_by_default_and_only_for_the_named_setting(network):
    from bot.config import Settings
    from model.occlusion import ExplainersBySetting
    from model.predict import Classifier

    assert Settings(token="1:x").why_mode == "exact"
    assert OcclusionExplainer(network, 16, 8).mode == "exact"
    classifier = Classifier(network=network, class_names=["a", "b", "c"])
    explainers = ExplainersBySetting(classifier, 8, adaptive=(16, 8))
    assert explainers(56, 28).mode == "exact" and explainers(16, 8).mode == "adaptive"
    assert ExplainersBySetting(classifier, 8)(16, 8).mode == "exact"


def test_adaptive_grid_is_exact_where_computed_and_computes_less():
    from model.adaptive_occlusion import adaptive_probability_grid
    from model.occlusion import grid_positions

    def probability(top: int, left: int) -> float:  # class 0's probability: a drop of 0.5 around (96, 128)
        return 0.9 - 0.5 * float(np.exp(-((top - 96) ** 2 + (left - 128) ** 2) / (2 * 20.0**2)))

    calls = []

    def probabilities_at(corners):
        calls.append(len(corners))
        return np.array([[probability(t, c), 1 - probability(t, c)] for t, c in corners], dtype=np.float32)

    starts = grid_positions(224, 16, 8)
    clean = np.array([0.9, 0.1], dtype=np.float32)
    grid, computed = adaptive_probability_grid(probabilities_at, starts, clean, 0)
    exact = np.array([[probability(t, c) for c in starts] for t in starts])
    np.testing.assert_allclose(grid[0][computed], exact[computed], atol=1e-6)
    assert sum(calls) == int(computed.sum()) < 0.6 * len(starts) ** 2  # the flat rest was interpolated
    assert computed.flat[int((0.9 - exact).argmax())]  # the largest drop is computed, not guessed
    assert np.abs(grid[0] - exact).max() < 0.02


# The torch-free incremental engine on OpenVINO (model/openvino_incremental.py), from the folded plan an export
# stores (model/incremental_export.py, model/incremental_store.py).

def _stored_runtime(network: nn.Module, folder) -> object:
    from model.export_manifest import Export
    from model.incremental_export import write_plan
    from model.incremental_store import read_plan
    from model.openvino_incremental import IncrementalRuntime

    export = Export(folder, {"incremental": write_plan(network, folder)}, ["a", "b", "c"], None, "", "", {})
    return IncrementalRuntime(read_plan(export), 224, threads=2)


@pytest.fixture(scope="module")
def stored_runtime(network, tmp_path_factory):
    return _stored_runtime(network, tmp_path_factory.mktemp("plan"))


@needs_openvino
@pytest.mark.parametrize("patch,stride,batch", [(56, 42, 4), (40, 23, 8)])  # both end on the image's far edge
def test_openvino_incremental_grid_equals_the_naive_loop(network, image, stored_runtime, patch, stride, batch):
    from model.openvino_incremental import OpenVINOIncrementalOcclusion

    explainer = OpenVINOIncrementalOcclusion(stored_runtime, patch, stride, batch, "fp32")
    calls = []
    clean, grid = explainer.probability_grid(image.numpy(), "fp32", lambda done, total: calls.append((done, total)))
    reference = naive_probability_grid(network, image, patch, stride)  # torch fp32, one whole image at a time
    count = len(explainer.geometry.starts)
    assert grid.shape == reference.shape == (3, count, count)
    assert calls == [(done, count * count) for done in range(0, count * count, batch)]  # the last batch is padded
    np.testing.assert_allclose(grid, reference, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        np.testing.assert_allclose(clean, torch.softmax(network(image[None]), 1)[0].numpy(), rtol=1e-4, atol=1e-5)
    assert np.ptp(grid) > 0.05  # the map moves: the comparison has teeth
    bf16_clean, bf16 = explainer.probability_grid(image.numpy(), "bf16")
    assert np.abs(bf16 - reference).max() < 0.2  # bf16's noise on this sensitive random head (batched bf16: ~0.1)


@needs_openvino
def test_the_clean_pass_grid_equals_the_naive_loop_and_pauses_before_every_pass(network, image, stored_runtime):
    from model.openvino_clean_pass import CleanPassOcclusion

    explainer = CleanPassOcclusion(stored_runtime, 56, 42, 4, "fp32")
    calls = []
    clean, grid = explainer.probability_grid(image.numpy(), "fp32", lambda done, total: calls.append((done, total)))
    reference = naive_probability_grid(network, image, 56, 42)
    assert grid.shape == reference.shape == (3, 5, 5)
    assert calls == [(done, 25) for done in range(25)]
    np.testing.assert_allclose(grid, reference, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        np.testing.assert_allclose(clean, torch.softmax(network(image[None]), 1)[0].numpy(), rtol=1e-4, atol=1e-5)
    assert np.ptp(grid) > 0.05
    with pytest.raises(TypeError):
        explainer.pieces("fp32")  # no second copy of the weights


@needs_openvino
def test_openvino_incremental_explains_with_the_contract(network, image, stored_runtime):
    from model.openvino_incremental import OpenVINOIncrementalOcclusion

    explainer = OpenVINOIncrementalOcclusion(stored_runtime, 56, 56, 4, "fp32")
    result = explainer.explain(image.numpy())
    expected = OcclusionExplainer(network, 56, 56, 4, method="naive").explain(image)
    assert result.target == expected.target
    np.testing.assert_allclose(result.occlusion_map, expected.occlusion_map, atol=1e-4)
    assert result.probability_grid.shape == (3, 4, 4)

    def abandon(done: int, total: int) -> None:
        if done:
            raise InterruptedError("abandoned")

    with pytest.raises(InterruptedError):
        explainer.explain(image.numpy(), between_batches=abandon)


@needs_openvino
@pytest.mark.parametrize("kind", ["npz", "json"])
def test_a_tampered_plan_is_refused(exported_checkpoint, tmp_path, kind):
    import json
    import shutil

    from model.engines import load_engine
    from model.export_manifest import ExportUnusable, export_dir, file_sha256, read_export, verify_files
    from model.incremental_store import read_plan
    from model.openvino_engine import OpenVINOEngine

    checkpoint = tmp_path / "model.pt"
    shutil.copy(exported_checkpoint, checkpoint)
    shutil.copytree(export_dir(exported_checkpoint), export_dir(checkpoint))
    export = read_export(export_dir(checkpoint), file_sha256(checkpoint))
    read_plan(export)  # intact: read
    plan = export_dir(checkpoint) / json.loads((export_dir(checkpoint) / "manifest.json").read_text())["incremental"][kind]
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 1
    plan.write_bytes(bytes(data))
    with pytest.raises(ExportUnusable, match="does not match its manifest"):
        read_plan(export)
    with pytest.raises(ExportUnusable):
        verify_files(export)
    engine, why = load_engine(checkpoint, device="cpu")  # the export is not served: torch converts, as for a bad IR
    assert not isinstance(engine, OpenVINOEngine) and "does not match" in why


INCREMENTAL_WITHOUT_TORCH = """
import sys
import numpy as np
from devtools.samples import image_bytes, make_photo
from model.engines import load_engine
from model.openvino_incremental import OpenVINOIncrementalOcclusion

engine, why = load_engine(sys.argv[1], device="cpu", precision="fp32", map_engine="incremental")
engine.prepare(workers=1, threads=2, probe_batch=2)
image = engine.decode(image_bytes(make_photo()))
from model.openvino_clean_pass import CleanPassOcclusion

explainer = engine.explainer(112, 56, 4)  # its windows hold 83% of a pass: whole passes of the clean model
assert isinstance(explainer, CleanPassOcclusion), type(explainer)
pieces = OpenVINOIncrementalOcclusion(engine.incremental_runtime(), 112, 56, 4, "fp32")
batched = type(engine)(engine.export, "fp32", map_engine="batched")
batched.prepare(workers=1, threads=2, probe_batch=2)
reference = batched.explainer(112, 56, 4).explain(image)
for made in (explainer, pieces):
    assert np.abs(made.explain(image).probability_grid - reference.probability_grid).max() < 1e-4
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
assert not loaded, loaded
import gc
del explainer, pieces, batched, engine  # OpenVINO's objects go while the interpreter still runs (exit-time teardown aborted once)
gc.collect()
print("ok")
"""


@needs_openvino
def test_an_incremental_map_on_an_export_imports_no_torch(exported_checkpoint):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", INCREMENTAL_WITHOUT_TORCH, str(exported_checkpoint)], cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_map_engine_auto_stays_batched_until_a_rule_measures_faster():
    from model.openvino_incremental import choose_map_engine

    assert choose_map_engine("incremental", 0.9)[0] and not choose_map_engine("batched", 0.1)[0]
    use, reason = choose_map_engine("auto", 0.53, "fp32")  # 8/4 fp32 measured slower incrementally
    assert not use and "batched" in reason
    use, reason = choose_map_engine("auto", 0.54, "bf16")
    assert not use and "bf16" in reason


@needs_openvino
def test_the_export_engine_decides_a_bf16_map_once(exported_checkpoint, monkeypatch):
    """The OpenVINO engine the bot serves (batched maps) decides a bf16 map's precision before its grid: a flat map
    gets one fp32 grid and no bf16 one, and its fine level is decided from the coarse map, without a probe."""
    from model.export_manifest import export_dir, file_sha256, read_export
    from model.openvino_engine import OpenVINOEngine, OpenVINOOcclusion
    from model.precision import Capability

    grids, passes = [], []
    real_grid = OpenVINOOcclusion.probability_grid

    def recorded_grid(self, forward, image, between_batches):
        grids.append((self.patch, forward.precision))
        return real_grid(self, forward, image, between_batches)

    monkeypatch.setattr(OpenVINOOcclusion, "probability_grid", recorded_grid)
    engine = OpenVINOEngine(read_export(export_dir(exported_checkpoint), file_sha256(exported_checkpoint)), "bf16",
                            capability=Capability(True, "simulated native"), map_engine="batched")
    engine.prepare(workers=1, threads=2, probe_batch=2)
    for precision in ("bf16", "fp32"):
        forward = engine.forward(precision)
        real = forward.probabilities
        monkeypatch.setattr(forward, "probabilities", lambda batch, real=real, p=precision: passes.append((p, len(batch))) or real(batch))
    blank = np.zeros((3, 224, 224), dtype=np.float32)  # occluding the mean colour with itself: a flat map
    coarse = engine.explainer(56, 56, 16).explain(blank)
    assert float(np.abs(coarse.occlusion_map).max()) == 0.0
    assert grids == [(56, "fp32")], grids  # no bf16 grid computed and thrown away
    assert passes[:2] == [("bf16", 1), ("bf16", 4)], passes  # the decision: clean pass and quadrant probe
    grids.clear(), passes.clear()
    engine.explainer(16, 104, 16).explain(blank, coarse.target)
    assert grids == [(16, "fp32")] and ("bf16", 4) not in passes, (grids, passes)  # decided from the coarse map


@needs_openvino
def test_map_engine_auto_leaves_the_plan_on_disk(exported_checkpoint):
    """Where auto serves batched maps it decides so without reading the plan: its weights (~100 MB for ResNet50)
    would otherwise sit in a 1 GB server's memory for nothing."""
    from model.export_manifest import export_dir, file_sha256, read_export
    from model.openvino_engine import OpenVINOEngine, OpenVINOOcclusion

    export = read_export(export_dir(exported_checkpoint), file_sha256(exported_checkpoint))
    engine = OpenVINOEngine(export, "fp32", map_engine="auto")
    engine.prepare(workers=1, threads=2, probe_batch=2)
    assert isinstance(engine.explainer(16, 8, 16), OpenVINOOcclusion)
    assert engine._incremental is None, "the plan was read"
    forced = OpenVINOEngine(export, "fp32", map_engine="incremental")
    forced.prepare(workers=1, threads=2, probe_batch=2)
    assert not isinstance(forced.explainer(16, 8, 16), OpenVINOOcclusion) and forced._incremental is not None
