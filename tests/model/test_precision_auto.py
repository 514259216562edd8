"""The auto rule among fp32, bf16 and int8 (model/precision_auto.py), capabilities simulated."""
from __future__ import annotations

from model.precision_auto import INT8_PROBE_TOLERANCE, CandidateProbe, choose_fastest, int8_capability


def test_int8_capability_follows_the_flags():
    assert int8_capability(["amx_int8"]).native_bf16
    assert int8_capability(["avx512_vnni"]).native_bf16
    assert not int8_capability(["avx2", "fma"]).native_bf16


def test_the_fastest_agreeing_precision_wins():
    chosen = choose_fastest(25.0, [CandidateProbe("bf16", True, 0.01, 7.0), CandidateProbe("int8", True, 0.03, 4.0)])
    assert chosen.precision == "int8" and "bf16" in chosen.reason and "slower" in chosen.reason


def test_a_disagreeing_int8_leaves_bf16():
    flipped = choose_fastest(25.0, [CandidateProbe("bf16", True, 0.01, 7.0), CandidateProbe("int8", False, 0.03, 4.0)])
    assert flipped.precision == "bf16" and "int8: top-1 DISAGREED" in flipped.reason
    far = choose_fastest(25.0, [CandidateProbe("bf16", True, 0.01, 7.0),
                                CandidateProbe("int8", True, INT8_PROBE_TOLERANCE * 1.5, 4.0)])
    assert far.precision == "bf16" and "disagreed with fp32" in far.reason


def test_nothing_faster_or_agreeing_keeps_fp32_with_every_reason():
    chosen = choose_fastest(10.0, [CandidateProbe("bf16", True, 0.01, 9.9)], skipped=["int8: no int8 units"])
    assert chosen.precision == "fp32"
    assert "not faster" in chosen.reason and "int8: no int8 units" in chosen.reason
