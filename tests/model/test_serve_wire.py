"""The gateway-cluster protocol (model.serve.wire): frames, levels, the token and its file. No Ray, no torch."""
from __future__ import annotations

import numpy as np
import pytest

from model.serve import wire


def test_frames_survive_any_chunking_and_carry_arrays_and_meta():
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    per_class = np.ones((2, 3, 3), dtype=np.float32)
    stream = wire.encode_frame({"kind": "map", "patch": 56, "final": False}, {"occlusion_map": grid}) + \
        wire.encode_frame({"kind": "map", "patch": 16, "final": True}, {"occlusion_map": grid * 2, "grid": per_class})
    for chunk in (1, 7, 1000, len(stream)):
        reader, frames = wire.FrameReader(), []
        for start in range(0, len(stream), chunk):
            frames += reader.feed(stream[start:start + chunk])
        assert [meta["patch"] for meta, _ in frames] == [56, 16]
        np.testing.assert_array_equal(frames[1][1]["occlusion_map"], grid * 2)
        assert frames[1][1]["grid"].shape == (2, 3, 3) and frames[1][0]["final"] is True


def test_a_frame_with_a_pickled_object_is_refused():
    import io
    import struct

    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(b"{}", dtype=np.uint8), evil=np.array([object()], dtype=object))
    body = buffer.getvalue()
    with pytest.raises(ValueError):
        wire.FrameReader().feed(struct.pack(">Q", len(body)) + body)


def test_levels_round_trip_and_bad_ones_are_refused():
    assert wire.parse_levels(wire.format_levels([(56, 28), (16, 8)])) == [(56, 28), (16, 8)]
    for bad in ("", "56", "0x8", "300x8", "a,b", "1x1,1x1,1x1,1x1,1x1"):
        with pytest.raises(ValueError):
            wire.parse_levels(bad)


def test_the_token_comes_from_the_environment_or_a_private_file(tmp_path):
    path = tmp_path / "token"
    assert wire.ensure_token_file(path) and not wire.ensure_token_file(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    assert wire.cluster_token({"RAY_AUTH_TOKEN_PATH": str(path)}) == path.read_text()
    assert wire.cluster_token({"RAY_AUTH_TOKEN": " from-env ", "RAY_AUTH_TOKEN_PATH": str(path)}) == "from-env"
    path.chmod(0o644)
    with pytest.raises(wire.TokenError, match="chmod 600"):
        wire.cluster_token({"RAY_AUTH_TOKEN_PATH": str(path)})
    with pytest.raises(wire.TokenError):
        wire.cluster_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_authorization_needs_the_exact_bearer_token():
    assert wire.authorized("Bearer abc", "abc")
    for header in (None, "", "abc", "Bearer ab", "Bearer abcd", "Basic abc"):
        assert not wire.authorized(header, "abc")
    assert not wire.authorized("Bearer ", "")  # no token configured: nobody is let in
