"""The OpenVINO conversion cache of a checkpoint without an export (model/openvino_runtime.py): hashed, and a
cached IR that does not match its hashes is converted again, never served."""
from __future__ import annotations

import json

from model.openvino_runtime import OpenVINOForward, check_agreement, load_or_convert


def test_a_modified_cached_ir_is_converted_again(classifier, tmp_path, caplog):
    model, source = load_or_convert(classifier.network, classifier.checkpoint_id, "fp32", 224, tmp_path)
    assert source.startswith("converted into")
    (xml,) = tmp_path.glob("*.xml")
    hashes = json.loads(xml.with_suffix(".json").read_text())
    assert set(hashes) >= {"xml_sha256", "bin_sha256"}
    _, source = load_or_convert(classifier.network, classifier.checkpoint_id, "fp32", 224, tmp_path)
    assert source.startswith("cache")
    weights = bytearray(xml.with_suffix(".bin").read_bytes())
    weights[len(weights) // 2] ^= 0x01
    xml.with_suffix(".bin").write_bytes(bytes(weights))
    model, source = load_or_convert(classifier.network, classifier.checkpoint_id, "fp32", 224, tmp_path)
    assert source.startswith("converted into") and "does not match" in caplog.text
    check_agreement(OpenVINOForward(model, "fp32", 1), classifier.network, 224)  # the fresh conversion agrees
