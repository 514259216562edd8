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


def test_levels_past_the_caps_are_refused():
    assert wire.parse_levels("56x28,16x8") == [(56, 28), (16, 8)]
    assert wire.parse_levels("16x4")  # 53 x 53 positions: within MAX_POSITIONS
    for bad in ("16x1", "1x1", "56x0", "16x3",  # stride 1, or 70 x 70 positions
                "²x8", "16x٨", "-16x8", "16x8,16x8,16x8,16x8,16x8", "16x8," * 10_000):
        with pytest.raises(ValueError):
            wire.parse_levels(bad)
    assert wire.level_positions(16, 8) == 27 * 27 and wire.level_positions(224, 2) == 1


def test_the_timeout_header_is_bounded():
    assert wire.parse_timeout("12.5") == 12.5
    assert wire.parse_timeout("1e12") == wire.parse_timeout("inf") == wire.MAX_TIMEOUT_S
    assert wire.parse_timeout("-3") == 0.0
    for bad in (None, "", "soon", "nan"):
        assert wire.parse_timeout(bad) == wire.DEFAULT_TIMEOUT_S


def test_a_frame_length_over_the_cap_is_refused_before_it_is_buffered():
    import struct

    frame = wire.encode_frame({"kind": "map"}, {"occlusion_map": np.zeros((3, 3), np.float32)})
    assert len(wire.FrameReader(max_frame_bytes=len(frame)).feed(frame)) == 1
    with pytest.raises(wire.FrameTooLarge):
        wire.FrameReader().feed(struct.pack(">Q", 2**63) + b"x" * 100)
    with pytest.raises(wire.FrameTooLarge):
        wire.FrameReader(max_frame_bytes=100).feed(frame[:8])  # the length alone is enough to refuse it


def test_the_inference_token_is_not_rays_and_lives_beside_it(tmp_path):
    ray_token = tmp_path / "auth_token"
    wire.ensure_token_file(ray_token)
    environ = {"RAY_AUTH_TOKEN_PATH": str(ray_token)}
    assert wire.inference_token_path(environ) == tmp_path / "inference_token"
    assert wire.inference_token_path({}) == wire.DEFAULT_TOKEN_PATH.with_name("inference_token")
    with pytest.raises(wire.TokenError, match="inference_token"):
        wire.inference_token(environ)  # not created yet: Ray's token is never used instead
    assert wire.ensure_token_file(wire.inference_token_path(environ))
    assert wire.inference_token(environ) != ray_token.read_text()
    other = tmp_path / "elsewhere"
    wire.ensure_token_file(other)
    assert wire.inference_token({**environ, "INFERENCE_TOKEN_FILE": str(other)}) == other.read_text()
    assert wire.inference_token({**environ, "INFERENCE_TOKEN": " given "}) == "given"


async def test_a_body_over_the_cap_is_refused_before_it_is_read_whole():
    read = []

    async def chunks(count: int, size: int = 1000):
        for _ in range(count):
            read.append(size)
            yield b"x" * size

    assert await wire.read_capped(chunks(3), "3000", limit=3000) == b"x" * 3000
    read.clear()
    with pytest.raises(wire.BodyTooLarge):
        await wire.read_capped(chunks(10), str(10_000), limit=3000)
    assert read == []  # refused from its Content-Length: nothing read
    with pytest.raises(wire.BodyTooLarge):
        await wire.read_capped(chunks(1000), None, limit=3000)  # chunked: stopped just past the cap
    assert sum(read) == 4000
