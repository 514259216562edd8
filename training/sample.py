"""Fetch the sample photos (the seed project's 20) into ``images/sample/<split>/<class>/``.

Each file is checked against the sha256 in ``images/sample-manifest.json``. Files already present with the
right hash are kept, so running it again costs nothing. A file is written to a temporary name and renamed only
after its hash matched: a failed download or a mismatch never leaves a partial or wrong file behind.

    python -m training.sample [--dest images/sample] [--mirror DIR] [--manifest FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model.export_manifest import file_sha256

DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "images" / "sample-manifest.json"
DEFAULT_DEST = Path("images/sample")
DOWNLOAD_TIMEOUT_S = 30


class FetchError(RuntimeError):
    """One file could not be fetched or verified; the message names it and says what to do."""


@dataclass(frozen=True)
class SampleFile:
    path: str
    sha256: str
    url: str
    size: int


def read_manifest(path: Path) -> list[SampleFile]:
    data = json.loads(Path(path).read_text())
    files = []
    for entry in data["files"]:
        relative = Path(entry["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise FetchError(f"manifest {path} has an unsafe path: {entry['path']}")
        files.append(SampleFile(entry["path"], entry["sha256"].lower(), entry["url"], int(entry.get("bytes", 0))))
    return files


def _copy_from(sample: SampleFile, mirror: Path | None, target: Path) -> None:
    if mirror is not None:
        source = mirror / sample.path
        if not source.is_file():
            raise FetchError(f"{sample.path}: not found in the mirror {mirror}")
        shutil.copyfile(source, target)
        return
    try:
        with urllib.request.urlopen(sample.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:  # URLError, timeouts and HTTP errors are all OSErrors
        raise FetchError(
            f"{sample.path}: download from {sample.url} failed ({exc}). "
            f"Check the network, or copy the photos from a local folder with --mirror DIR (make variable SAMPLE_MIRROR)."
        ) from None


def fetch_one(sample: SampleFile, dest: Path, mirror: Path | None) -> bool:
    """Make ``dest/sample.path`` exist with the right hash. Returns True when it had to be fetched."""
    target = dest / sample.path
    if target.is_file() and file_sha256(target) == sample.sha256:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".fetch-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _copy_from(sample, mirror, tmp)
        actual = file_sha256(tmp)
        if actual != sample.sha256:
            where = f"the mirror {mirror}" if mirror else sample.url
            raise FetchError(
                f"{sample.path}: sha256 mismatch (expected {sample.sha256[:12]}..., got {actual[:12]}...) "
                f"from {where}; the file was not saved. Replace the file at the source and run again."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def fetch_samples(dest: Path, mirror: Path | None = None, manifest: Path = DEFAULT_MANIFEST) -> tuple[int, list[str]]:
    """Fetch every file of the manifest. Returns (files fetched, error messages); good files are kept."""
    samples = read_manifest(manifest)
    fetched, errors = 0, []
    for sample in tqdm(samples, desc="sample photos", unit="photo", disable=None):
        try:
            fetched += fetch_one(sample, dest, mirror)
        except FetchError as exc:
            errors.append(str(exc))
    return fetched, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="where to put the photos (default: %(default)s)")
    parser.add_argument("--mirror", type=Path, default=None, help="copy from this local folder instead of downloading")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="file list with sha256 (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.mirror is not None and not args.mirror.is_dir():
        print(f"error: mirror folder {args.mirror} does not exist", file=sys.stderr)
        return 2
    fetched, errors = fetch_samples(args.dest, args.mirror, args.manifest)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    total = len(read_manifest(args.manifest))
    print(f"{total - len(errors)}/{total} sample photos in {args.dest} ({fetched} fetched now)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
