"""INT8 on OpenVINO: NNCF's post-training quantization of the fp32 IR, its calibration photos, and its cache.

Why: on a Xeon with AMX (``amx_int8``) or VNNI the CPU's int8 matrix units run a ResNet50 faster than its
bf16 ones (AMX's int8 peak is twice its bf16 peak); NNCF's post-training quantization, calibrated on a few
hundred training photos, costs ResNet50 0.1-0.3 top-1 points in Intel's published tables. The figures on
this machine are in docs/benchmarks.md (bench/bench_int8.py).

- :func:`quantize_int8` ``(ov_model, calibration_arrays) -> ov_model``: the fp32 OpenVINO model with
  FakeQuantize nodes (weights stored as int8), calibrated on normalized 3 x H x W float32 arrays. NNCF is
  needed only here, at export / first start: serving an already quantized IR needs OpenVINO alone.
- :func:`calibration_arrays` reads the photos (the checkpoint's training folder, or any folder, such as an
  export's stored sample) through the serving preprocessing, evenly spread over the sorted file list.
- :func:`int8_cache_key`, :func:`save_int8`, :func:`load_int8`: the quantized IR kept under a key of
  everything it depends on (checkpoint, OpenVINO and NNCF versions, input shape, and the calibration
  files' names, sizes and times), written atomically. An export manifest can store the key as the IR's entry.

Where classification runs int8, heat maps stay in bf16 or fp32 unless :data:`INT8_MAPS` (see its comment).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .preprocess import PreprocessConfig, open_image, preprocess_array

log = logging.getLogger(__name__)

INT8_FORMAT = "openvino-int8-ir-v1"
CALIBRATION_PHOTOS = 300  # NNCF's default subset size, and what the published ResNet50 figures used
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Heat maps from the int8 model: off. On the proxy model the int8 maps' largest difference from fp32 was
# above model.occlusion.BF16_MAP_TOLERANCE (bench/bench_int8.py --maps; docs/benchmarks.md), so a map that
# might mislead is not served; classification alone runs int8, maps in the best of bf16/fp32.
INT8_MAPS = False


class Int8Unavailable(RuntimeError):
    """int8 was asked for but cannot be made here (no NNCF for a first quantization, no calibration photos)."""


def nncf_version() -> str | None:
    try:
        import nncf
    except ImportError:
        return None
    return nncf.__version__


def files_digest(files: Sequence[Path]) -> str:
    """sha256 over the calibration files' names, sizes and modification times: a different sample is a
    different int8 model, and a warm start finds its IR without decoding a photo."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name};{stat.st_size};{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def int8_cache_key(checkpoint_id: str, side: int, openvino: str, nncf: str, calibration: str) -> str:
    """Everything the quantized IR depends on."""
    text = (f"{INT8_FORMAT};checkpoint={checkpoint_id};openvino={openvino};nncf={nncf};input=?x3x{side}x{side};"
            f"calibration={calibration}")
    return hashlib.sha256(text.encode()).hexdigest()


def photo_files(folder: Path, count: int = CALIBRATION_PHOTOS) -> list[Path]:
    """Up to ``count`` photos under ``folder``, evenly spread over the sorted list (every class is met)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if len(files) <= count:
        return files
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def calibration_arrays(folder: Path, config: PreprocessConfig, count: int = CALIBRATION_PHOTOS) -> list[np.ndarray]:
    """The normalized 3 x crop x crop float32 arrays of up to ``count`` photos under ``folder`` (unreadable
    files skipped); raises :class:`Int8Unavailable` when none could be read."""
    arrays = []
    for path in photo_files(folder, count):
        try:
            arrays.append(preprocess_array(open_image(path, draft_size=config.resize), config))
        except Exception as error:  # one bad file does not stop a calibration
            log.warning("calibration photo %s skipped (%s)", path, error)
    if not arrays:
        raise Int8Unavailable(f"no calibration photos could be read under {folder}")
    return arrays


def training_photo_folder(metadata: dict) -> Path | None:
    """The checkpoint's training folder (``metadata['training']['data']``) when it is still on this machine."""
    data = (metadata.get("training") or {}).get("data")
    return Path(data) if data and Path(data).is_dir() else None


def quantize_int8(ov_model, calibration_arrays: Sequence[np.ndarray]):
    """The fp32 OpenVINO ``ov_model`` quantized to int8 by NNCF (post-training, mixed preset: symmetric
    weights, asymmetric activations), calibrated on ``calibration_arrays`` (each 3 x H x W float32, as the
    network takes them). The head's last MatMul stays as is: NNCF's CNN defaults."""
    try:
        import nncf
    except ImportError as error:
        raise Int8Unavailable("int8 needs NNCF to quantize the model once (pip install nncf)") from error
    if not calibration_arrays:
        raise Int8Unavailable("int8 needs calibration photos")
    samples = [np.ascontiguousarray(array[None], dtype=np.float32) for array in calibration_arrays]
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its progress bars and notes are not the bot's log
    return nncf.quantize(ov_model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED,
                         subset_size=len(samples))


def save_int8(ov_model, folder: Path, key: str) -> Path:
    """Write the quantized IR as ``folder/<key>.xml`` + ``.bin`` atomically (the .xml last); its path."""
    import openvino as ov

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.xml"
    ov.save_model(ov_model, temporary, compress_to_fp16=False)  # int8 weights stay int8; the rest exact
    os.replace(temporary.with_suffix(".bin"), folder / f"{key}.bin")
    os.replace(temporary, folder / f"{key}.xml")
    return folder / f"{key}.xml"


def load_int8(folder: Path, key: str):
    """The stored quantized IR for ``key``, or None when it is not there (or unreadable: logged)."""
    import openvino as ov

    xml = Path(folder) / f"{key}.xml"
    if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
        return None
    try:
        return ov.Core().read_model(xml)
    except Exception as error:  # a damaged cache is only a cache
        log.warning("int8 cache %s unreadable (%s): quantizing again", xml, error)
        return None


def load_or_quantize(fp32_model, checkpoint_id: str, config: PreprocessConfig, photos: Path,
                     cache_dir: Path | None, count: int = CALIBRATION_PHOTOS) -> tuple[object, str, str | None]:
    """The int8 model of ``fp32_model`` calibrated on up to ``count`` photos under ``photos``, where it came
    from (the cache, or quantized now and cached), and its cache key (None: not cached)."""
    import openvino as ov

    files = photo_files(photos, count)
    if not files:
        raise Int8Unavailable(f"no calibration photos under {photos}")
    key = int8_cache_key(checkpoint_id, config.crop, ov.get_version(), nncf_version() or "none", files_digest(files))
    if cache_dir is not None and checkpoint_id:
        cached = load_int8(cache_dir, key)
        if cached is not None:
            return cached, f"cache {Path(cache_dir) / key}.xml", key
    arrays = calibration_arrays(photos, config, count)
    model = quantize_int8(fp32_model, arrays)
    if cache_dir is None or not checkpoint_id:
        return model, f"quantized on {len(arrays)} photos, not cached", None
    try:
        xml = save_int8(model, cache_dir, key)
    except OSError as error:
        log.warning("could not cache the int8 model in %s (%s): quantizing at every start", cache_dir, error)
        return model, f"quantized on {len(arrays)} photos, not cached", None
    return ov.Core().read_model(xml), f"quantized on {len(arrays)} photos into {xml}", key


def _pointer(folder: Path, checkpoint_id: str) -> Path:
    """The file naming the latest int8 IR of a checkpoint, so a start without the calibration photos finds it."""
    return Path(folder) / f"int8-{checkpoint_id[:32]}.key"


def int8_forward(classifier, cache_dir: Path | None, calibration_dir: Path | None = None) -> tuple[object, str]:
    """The int8 OpenVINO model of a loaded classifier and its source: calibrated on ``calibration_dir`` or the
    checkpoint's training folder; where neither is here, the last int8 IR cached for this checkpoint."""
    from .openvino_runtime import load_or_convert

    photos = calibration_dir if calibration_dir is not None else training_photo_folder(classifier.metadata)
    if photos is None:
        pointer = _pointer(cache_dir, classifier.checkpoint_id) if cache_dir is not None and classifier.checkpoint_id else None
        key = pointer.read_text().strip() if pointer is not None and pointer.is_file() else ""
        cached = load_int8(cache_dir, key) if key else None
        if cached is None:
            raise Int8Unavailable("int8 needs calibration photos once: the checkpoint's training folder is not on "
                                  "this machine and no int8 model of it is cached")
        return cached, f"cache {Path(cache_dir) / key}.xml (calibrated earlier)"
    fp32, _ = load_or_convert(classifier.network, classifier.checkpoint_id, "fp32", classifier.preprocess_config.crop, cache_dir)
    model, source, key = load_or_quantize(fp32, classifier.checkpoint_id, classifier.preprocess_config, Path(photos), cache_dir)
    if key is not None:
        try:
            _pointer(cache_dir, classifier.checkpoint_id).write_text(key)
        except OSError:
            pass  # only a shortcut for starts without the photos
    return model, source
