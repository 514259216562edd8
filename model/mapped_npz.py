"""The arrays of an uncompressed ``.npz`` as views of one private file mapping, verified by sha256 as mapped.

Why (issue 26, a 1 GB server): the incremental engine's compiled pieces point at the plan's weights
(``shared_memory`` constants, :mod:`model.openvino_incremental_graphs`), so the ~100 MB of ResNet50 weights
stayed resident next to the pieces' own repacked copies. Mapped from the file instead, those pages are read only
while a piece compiles, and :meth:`MappedNpz.release` drops them from the process's resident memory afterwards
(``madvise(MADV_DONTNEED)``; the file keeps them, and a page touched again is read back from it).

Safety: the member names, sizes, dtypes and offsets are parsed from the verified mapping, never executed
(``.npy`` headers are read as literals by NumPy's own parser; object dtypes are refused: no pickle). The mapping is
``MAP_PRIVATE``: pages never written stay backed by the file, so a file modified in place after the check would
show through where a page is read again; :meth:`verify` hashes the mapping again (a chunk resident at a time)
and the runtime calls it before each later compilation. An export is replaced by new, differently named files
(:mod:`model.export_manifest`), never edited in place.
"""
from __future__ import annotations

import hashlib
import io
import mmap
import zipfile
from pathlib import Path

import numpy as np

from .export_manifest import ExportUnusable

CHUNK = 8 * 1024 * 1024
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class MappedNpz:
    """``files`` and ``[name]`` as :func:`numpy.load` gives them for an ``.npz``, the arrays read-write views of a
    private mapping (writes would stay in this process; nothing writes them)."""

    def __init__(self, path: Path, sha256: str):
        self.path, self.sha256 = path, sha256
        try:
            with open(path, "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as error:  # ValueError: an empty file cannot be mapped
            raise ExportUnusable(f"{path} could not be mapped ({error})") from None
        self.verify()
        self._arrays = self._parse()
        self.files = list(self._arrays)
        self.release()  # parsing touched the directory and the headers only; nothing needs to stay resident

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def verify(self) -> None:
        """Hash the mapping against the manifest's figure, a chunk resident at a time (ExportUnusable otherwise)."""
        digest = hashlib.sha256()
        for start in range(0, len(self._map), CHUNK):
            digest.update(memoryview(self._map)[start : start + CHUNK])
            self._map.madvise(mmap.MADV_DONTNEED, start, min(CHUNK, len(self._map) - start))
        if digest.hexdigest() != self.sha256:
            raise ExportUnusable(f"{self.path.name} does not match its manifest (sha256 {digest.hexdigest()[:12]}, expected "
                                 f"{self.sha256[:12]}): damaged or modified after export")

    def release(self) -> None:
        """Drop the mapped pages from this process's resident memory (read back from the file if touched again)."""
        self._map.madvise(mmap.MADV_DONTNEED)

    def _parse(self) -> dict[str, np.ndarray]:
        arrays = {}
        try:
            with zipfile.ZipFile(self._map) as archive:
                for info in archive.infolist():
                    if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                        raise ExportUnusable(f"{self.path.name}: member {info.filename[:60]!r} is not a stored .npy")
                    arrays[info.filename[:-4]] = self._member(info)
        except zipfile.BadZipFile as error:
            raise ExportUnusable(f"{self.path.name} is not a readable .npz ({error})") from None
        return arrays

    def _member(self, info: zipfile.ZipInfo) -> np.ndarray:
        local = self._map[info.header_offset : info.header_offset + 30]
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ExportUnusable(f"{self.path.name}: member {info.filename[:60]!r} has no local header")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        header = io.BytesIO(self._map[start : start + 65536 + 16])
        version = np.lib.format.read_magic(header)
        if version not in _HEADER_READERS:
            raise ExportUnusable(f"{self.path.name}: member {info.filename[:60]!r} has .npy version {version}")
        shape, fortran_order, dtype = _HEADER_READERS[version](header)
        count = int(np.prod(shape, dtype=np.int64))
        offset = start + header.tell()
        if dtype.hasobject or fortran_order or header.tell() + count * dtype.itemsize != info.file_size \
                or offset + count * dtype.itemsize > len(self._map):
            raise ExportUnusable(f"{self.path.name}: member {info.filename[:60]!r} is not a plain C-order array")
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=offset).reshape(shape)
