"""model/mapped_npz.py: an export's .npz as views of a verified file mapping, refused when it is anything else."""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from model.export_manifest import ExportUnusable
from model.mapped_npz import MappedNpz


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.standard_normal((8, 3, 7, 7), dtype=np.float32), "conv.bias": np.arange(8, dtype=np.float32),
            "head": rng.standard_normal((3, 2048)).astype(np.float64)}


def test_the_arrays_are_those_numpy_saved_and_can_be_released_and_read_again(tmp_path, arrays):
    path = tmp_path / "plan.npz"
    np.savez(path, **arrays)
    mapped = MappedNpz(path, _sha(path))
    assert sorted(mapped.files) == sorted(arrays)
    for name, value in arrays.items():
        assert mapped[name].dtype == value.dtype and np.array_equal(mapped[name], value)
    mapped.release()
    assert np.array_equal(mapped["conv.weight"], arrays["conv.weight"])  # read back from the file after the release
    mapped.verify()


def test_a_wrong_hash_a_compressed_archive_and_a_pickled_member_are_refused(tmp_path, arrays):
    path = tmp_path / "plan.npz"
    np.savez(path, **arrays)
    with pytest.raises(ExportUnusable, match="does not match"):
        MappedNpz(path, "0" * 64)
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **arrays)
    with pytest.raises(ExportUnusable, match="not a stored .npy"):
        MappedNpz(compressed, _sha(compressed))
    pickled = tmp_path / "pickled.npz"
    member = io.BytesIO()
    np.save(member, np.array([{"code": "os.system"}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(pickled, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("evil.npy", member.getvalue())
    with pytest.raises(ExportUnusable, match="not a plain"):
        MappedNpz(pickled, _sha(pickled))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ExportUnusable):
        MappedNpz(empty, _sha(empty))


def test_a_file_changed_in_place_after_mapping_fails_the_next_check(tmp_path, arrays):
    path = tmp_path / "plan.npz"
    np.savez(path, **arrays)
    mapped = MappedNpz(path, _sha(path))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the last member's values
    with open(path, "r+b") as file:  # in place: the mapping's untouched pages show it
        file.write(bytes(data))
    with pytest.raises(ExportUnusable, match="does not match"):
        mapped.verify()
