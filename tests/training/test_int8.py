"""INT8 on a model trained on the synthetic separable classes (a random-init model's classes are ties):
agreement with fp32, the cached IR, and heat maps kept out of int8 (model/int8.py INT8_MAPS)."""
from __future__ import annotations

import pytest
import torch

from model import load_classifier
from model.int8 import INT8_MAPS, nncf_version
from model.openvino_runtime import openvino_version
from model.precision import Capability
from model.runtime import prepare_model

pytestmark = pytest.mark.skipif(openvino_version() is None or nncf_version() is None,
                                reason="OpenVINO and NNCF are needed to quantize")
NATIVE = Capability(True, "simulated native")
NOT_NATIVE = Capability(False, "simulated CPU without int8 units")


@pytest.fixture(scope="module")
def trained(learned_run):
    _, result = learned_run
    data = result.checkpoint.parents[1] / "data"
    reference = load_classifier(result.checkpoint)
    photos = sorted(data.rglob("*.png"))
    batch = torch.stack([reference.preprocess(reference.open(p)) for p in photos])
    return result.checkpoint, data, reference, batch


def test_int8_agrees_with_fp32_and_is_cached(trained, tmp_path):
    checkpoint, data, reference, batch = trained
    served = load_classifier(checkpoint)
    preparation = prepare_model(served, False, precision="int8", runtime="openvino", cache_dir=tmp_path, calibration_dir=data)
    assert (served.precision, served.runtime) == ("int8", "openvino"), preparation.precision_reason
    assert "quantized on" in preparation.precision_reason
    expected, got = reference.probabilities(batch), served.probabilities(batch)
    agreement = float((expected.argmax(1) == got.argmax(1)).float().mean())
    # Measured 36/42 here: this model's backbone is random-init, so its classes hang on small feature
    # differences that int8's activation steps blur (the proxy model agreed on 119/120, bench/bench_int8.py).
    # Forced int8 is served as asked; auto guards it with the probe (the next test).
    assert agreement >= 0.8, agreement
    assert served.map_precision != "int8" or INT8_MAPS
    again = load_classifier(checkpoint)
    again.metadata["training"] = {"data": str(tmp_path / "moved away")}  # the photos are gone: the cache serves
    second = prepare_model(again, False, precision="int8", runtime="openvino", cache_dir=tmp_path)  # no photos now
    assert again.precision == "int8" and "calibrated earlier" in second.precision_reason
    torch.testing.assert_close(again.probabilities(batch), got)


def test_auto_takes_int8_only_where_it_agrees(trained, tmp_path):
    checkpoint, data, reference, batch = trained
    served = load_classifier(checkpoint)
    preparation = prepare_model(served, False, precision="auto", runtime="openvino", cache_dir=tmp_path,
                                capability=NATIVE, int8_capability=NATIVE, calibration_dir=data)
    assert "int8:" in preparation.precision_reason  # measured, and the reason says how it went
    if served.precision == "int8":
        agreement = float((reference.probabilities(batch).argmax(1) == served.probabilities(batch).argmax(1)).float().mean())
        assert agreement >= 0.95, preparation.precision_reason
        assert served.map_precision in ("bf16", "fp32")


def test_auto_never_takes_int8_without_int8_units(trained, tmp_path):
    checkpoint, data, _, _ = trained
    served = load_classifier(checkpoint)
    preparation = prepare_model(served, False, precision="auto", runtime="openvino", cache_dir=tmp_path,
                                capability=NATIVE, int8_capability=NOT_NATIVE, calibration_dir=data)
    assert served.precision != "int8"
    assert "int8: simulated CPU without int8 units" in preparation.precision_reason
    assert not list(tmp_path.glob("int8-*"))  # nothing was quantized


def test_int8_without_photos_or_cache_serves_fp32_and_says_why(trained, tmp_path):
    checkpoint, _, _, _ = trained
    served = load_classifier(checkpoint)
    served.metadata["training"] = {"data": str(tmp_path / "gone")}
    preparation = prepare_model(served, False, precision="int8", runtime="openvino", cache_dir=tmp_path)
    assert served.precision == "fp32" and "calibration photos" in preparation.precision_reason


def test_auto_refuses_an_int8_model_that_fails_on_photos(trained, tmp_path):
    """The random-image probe alone cannot tell a broken int8 model (bench/bench_int8_tolerance.py): here the int8
    cache of this checkpoint holds the quantized model of *other* weights, as a stale or damaged cache could; auto
    must check it on the photos, refuse it and say so, and keep the photo-checked precision's reasons."""
    import openvino as ov

    from model.int8 import CALIBRATION_PHOTOS, calibration_arrays, files_digest, int8_cache_key, photo_files, quantize_int8, save_int8
    from model.openvino_runtime import load_or_convert

    checkpoint, data, reference, batch = trained
    other = load_classifier(checkpoint)
    for module in other.network.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    other.network.eval()
    wrong_fp32, _ = load_or_convert(other.network, "", "fp32", other.preprocess_config.crop, None)
    wrong = quantize_int8(wrong_fp32, calibration_arrays(data, other.preprocess_config, 8))
    key = int8_cache_key(reference.checkpoint_id, reference.preprocess_config.crop, ov.get_version(), nncf_version(),
                         files_digest(photo_files(data, CALIBRATION_PHOTOS)))
    save_int8(wrong, tmp_path, key)

    served = load_classifier(checkpoint)
    preparation = prepare_model(served, False, precision="auto", runtime="openvino", cache_dir=tmp_path,
                                capability=NATIVE, int8_capability=NATIVE, calibration_dir=data)
    assert served.precision != "int8", preparation.precision_reason
    assert "int8: its top-1 agreed with fp32 on" in preparation.precision_reason, preparation.precision_reason
