"""The deployable model beside a checkpoint: its folder, its manifest, and the checks before it serves.
No torch here: the OpenVINO engine (:mod:`model.openvino_engine`) reads an export without it; writing one
(:mod:`model.export`) needs torch.

Layout: ``checkpoints/model.pt`` -> ``checkpoints/model.openvino/`` holding ``manifest.json`` and one IR
(``.xml`` graph + ``.bin`` weights) per precision, named ``{precision}-{first 12 hex of the .bin's sha256}``
so a new export never overwrites the files an old manifest names. The manifest is written last (temporary
file, fsync, rename, fsync of the folder): it is the commit point, and files it does not name are removed.

Manifest (JSON, ``format_version`` 1). Readers ignore keys they do not know, and precisions they do not
serve, so a later writer may add an entry (issue 28's ``int8``) without breaking an older reader::

    {
      "format": "product-id-export", "format_version": 1, "created_at": "2026-12-03T12:00:00+00:00",
      "checkpoint": {"file": "model.pt", "sha256": "<hex>"},
      "class_names": ["hoodie", ...],
      "preprocess": {"resize": 256, "crop": 224, "mean": [...], "std": [...]},
      "input": [-1, 3, 224, 224],                       # N dynamic
      "openvino": "2026.4.1-...",                       # the version that wrote the IR
      "ir": {                                           # precision -> its IR
        "fp32": {"xml": "fp32-<hex12>.xml", "xml_sha256": "<hex>", "bin": "fp32-<hex12>.bin",
                 "bin_sha256": "<hex>", "weights": "f32", "inference_precision": "f32"},
        "bf16": {..., "weights": "f16", "inference_precision": "bf16"}
        # "int8": {..., "weights": "i8", "inference_precision": "f32", "calibration": {...}}   (issue 28)
      },
      "probe": {                                        # measured at export, against torch fp32
        "reference": "torch fp32", "images": 8, "seed": 0, "tolerance": 0.02,
        "fp32": {"top1_agree": true, "max_difference": 3e-06, "ms_per_photo": 20.1},
        "bf16": {"top1_agree": true, "max_difference": 0.004, "ms_per_photo": 7.4}
      },
      "incremental": {"npz": "plan-<hex12>.npz", "npz_sha256": "<hex>",   # the folded plan of the torch-free
                      "json": "plan-<hex12>.json", "json_sha256": "<hex>"} # incremental maps (model/incremental_store.py)
    }

Checks before serving (:func:`read_export`): the manifest parses and has this format; its checkpoint sha256
is the checkpoint file's (else it is stale); the fp32 IR is listed; every listed IR file's bytes hash to
the manifest's figure when they are read (:func:`read_verified`: hashed from the bytes loaded, not by a second
open); fp32 agreed with torch at export. Anything else raises :class:`ExportUnusable` with the reason, and
the caller converts with torch instead (never serves a failed export).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .preprocess import PreprocessConfig

FORMAT = "product-id-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE_PRECISION = "fp32"  # must be present: the reference every other precision is checked against


class ExportUnusable(RuntimeError):
    """The export is missing, stale (another checkpoint), damaged or tampered with; the message says which."""


def export_dir(checkpoint: str | Path) -> Path:
    """Where a checkpoint's export lives: ``model.pt`` -> ``model.openvino/`` in the same folder."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".openvino")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def publish_named(folder: Path, prefix: str, temporaries: dict[str, Path], named_by: str) -> dict[str, str]:
    """Move the written ``temporaries`` (kind -> hidden file in ``folder``) in under one content name,
    ``{prefix}-{sha256 of named_by's file, 12 hex}.{kind}``: each fsynced, then renamed in the dict's order, then
    the folder fsynced. The manifest entry: ``{kind: file name, kind_sha256: its hash}`` for each kind."""
    for path in temporaries.values():
        fsync_file(path)
    hashes = {kind: file_sha256(path) for kind, path in temporaries.items()}
    name = f"{prefix}-{hashes[named_by][:12]}"
    entry = {}
    for kind, path in temporaries.items():
        os.replace(path, folder / f"{name}.{kind}")
        entry[kind], entry[f"{kind}_sha256"] = f"{name}.{kind}", hashes[kind]
    fsync_dir(folder)
    return entry


def write_json_atomically(data: dict, path: Path) -> None:
    """``data`` as JSON at ``path``: a hidden temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.chmod(temporary, 0o644)  # like the IR files: a service user other than the exporter reads it
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True)
class IRFiles:
    """One precision's IR as the manifest lists it."""

    precision: str
    xml: Path
    xml_sha256: str
    bin: Path
    bin_sha256: str
    inference_precision: str  # OpenVINO's INFERENCE_PRECISION_HINT for it ("f32", "bf16")


@dataclass(frozen=True)
class Export:
    """A manifest that passed the checks that need no IR bytes (the IR files are checked as they are read)."""

    folder: Path
    manifest: dict
    class_names: list[str]
    preprocess: PreprocessConfig
    checkpoint_sha256: str
    openvino_version: str
    ir: dict[str, IRFiles]

    def probe(self, precision: str) -> dict | None:
        """The export-time probe of ``precision`` against torch fp32 (top1_agree, max_difference, ms_per_photo)."""
        entry = self.manifest.get("probe", {}).get(precision)
        return entry if isinstance(entry, dict) else None


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, read once, after checking they hash to ``sha256`` (ExportUnusable otherwise)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ExportUnusable(f"{path} could not be read ({error})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ExportUnusable(f"{path.name} does not match its manifest (sha256 {actual[:12]}, expected {sha256[:12]}): "
                             "damaged or modified after export")
    return data


def _ir_entry(folder: Path, precision: str, entry: dict) -> IRFiles:
    try:
        xml, bin_ = folder / str(entry["xml"]), folder / str(entry["bin"])
        if xml.parent != folder or bin_.parent != folder:  # names only, never a path out of the folder
            raise ExportUnusable(f"the manifest's {precision} IR names a file outside {folder}")
        return IRFiles(precision, xml, str(entry["xml_sha256"]), bin_, str(entry["bin_sha256"]),
                       str(entry.get("inference_precision", "f32")))
    except (KeyError, TypeError) as error:
        raise ExportUnusable(f"the manifest's {precision} IR entry is incomplete ({error})") from None


def read_export(folder: str | Path, checkpoint_sha256: str) -> Export:
    """The export in ``folder`` if it belongs to the checkpoint whose file hashes to ``checkpoint_sha256``
    (see the module docstring for the checks); :class:`ExportUnusable` with the reason otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ExportUnusable(f"no export at {folder} (python -m model export --checkpoint FILE writes one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportUnusable(f"{path} is unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportUnusable(f"{path} is not a {FORMAT} manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ExportUnusable(f"{path} has format version {manifest.get('format_version')}; this code reads up to {FORMAT_VERSION}")
    recorded = str(manifest.get("checkpoint", {}).get("sha256", ""))
    if recorded != checkpoint_sha256:
        raise ExportUnusable(f"the export at {folder} is stale: made from checkpoint {recorded[:12] or '?'}, "
                             f"the checkpoint is now {checkpoint_sha256[:12]}")
    entries = manifest.get("ir")
    if not isinstance(entries, dict) or REFERENCE_PRECISION not in entries:
        raise ExportUnusable(f"{path} lists no {REFERENCE_PRECISION} IR")
    ir = {precision: _ir_entry(folder, precision, entry) for precision, entry in entries.items() if isinstance(entry, dict)}
    reference = (manifest.get("probe") or {}).get(REFERENCE_PRECISION) or {}
    if reference.get("top1_agree") is not True:
        raise ExportUnusable(f"{path}: the {REFERENCE_PRECISION} IR did not agree with torch at export")
    try:
        class_names = [str(name) for name in manifest["class_names"]]
        preprocess = PreprocessConfig.from_dict(manifest["preprocess"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportUnusable(f"{path} lacks its classes or preprocessing ({error})") from None
    return Export(folder, manifest, class_names, preprocess, recorded, str(manifest.get("openvino", "")), ir)


def verify_files(export: Export) -> None:
    """Every IR and plan file the manifest lists hashes to its figure (ExportUnusable otherwise): the check before an
    engine is chosen. Compiling checks again, on the bytes it compiles (:func:`read_verified`)."""
    pairs = [pair for files in export.ir.values() for pair in ((files.xml, files.xml_sha256), (files.bin, files.bin_sha256))]
    plan = export.manifest.get("incremental")
    if isinstance(plan, dict):  # the folded plan of the incremental maps (model/incremental_store.py reads it)
        pairs += [(export.folder / str(plan.get(kind, "")), str(plan.get(f"{kind}_sha256", ""))) for kind in ("npz", "json")]
    for path, expected in pairs:
        try:
            actual = file_sha256(path)
        except OSError as error:
            raise ExportUnusable(f"{path} could not be read ({error})") from None
        if actual != expected:
            raise ExportUnusable(f"{path.name} does not match its manifest (sha256 {actual[:12]}, expected "
                                 f"{expected[:12]}): damaged or modified after export")


def remove_unlisted(folder: Path, manifest: dict) -> None:
    """Delete IR and plan files in ``folder`` that ``manifest`` does not name (an older export's)."""
    listed = {str(entry[key]) for entry in manifest.get("ir", {}).values() for key in ("xml", "bin")}
    listed |= {str(value) for key, value in (manifest.get("incremental") or {}).items() if key in ("npz", "json")}
    for path in list(folder.glob("*.xml")) + list(folder.glob("*.bin")) + list(folder.glob("plan-*")):
        if path.name not in listed:
            path.unlink(missing_ok=True)
