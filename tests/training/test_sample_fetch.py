"""`python -m training.sample`: copy from a mirror, verify sha256, never leave a partial or wrong file."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from training.sample import main


def make_mirror(root: Path) -> Path:
    """A mirror of three small files and a manifest describing it."""
    files = {"train/a/one.jpg": b"first photo", "train/b/two.jpg": b"second photo", "test/a/three.jpg": b"third"}
    entries = []
    for rel, data in files.items():
        (root / "mirror" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "mirror" / rel).write_bytes(data)
        entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "url": "http://127.0.0.1:9/" + rel, "bytes": len(data)})
    (root / "manifest.json").write_text(json.dumps({"files": entries}))
    return root / "mirror"


def test_fetch_from_mirror_then_nothing_to_do(tmp_path, capsys):
    mirror = make_mirror(tmp_path)
    args = ["--dest", str(tmp_path / "out"), "--mirror", str(mirror), "--manifest", str(tmp_path / "manifest.json")]
    assert main(args) == 0
    assert (tmp_path / "out/train/b/two.jpg").read_bytes() == b"second photo"
    assert "3 fetched now" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 fetched now" in capsys.readouterr().out


def test_corrupted_file_is_not_saved_and_is_named(tmp_path, capsys):
    mirror = make_mirror(tmp_path)
    (mirror / "train/a/one.jpg").write_bytes(b"tampered")
    status = main(["--dest", str(tmp_path / "out"), "--mirror", str(mirror), "--manifest", str(tmp_path / "manifest.json")])
    captured = capsys.readouterr()
    assert status == 1
    assert "train/a/one.jpg" in captured.err and "sha256 mismatch" in captured.err
    assert not (tmp_path / "out/train/a/one.jpg").exists()
    assert (tmp_path / "out/train/b/two.jpg").exists(), "good files are still fetched"
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name.startswith(".fetch-")]
    assert leftovers == []


def test_a_wrong_existing_file_is_replaced(tmp_path):
    mirror = make_mirror(tmp_path)
    target = tmp_path / "out/test/a/three.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale")
    assert main(["--dest", str(tmp_path / "out"), "--mirror", str(mirror), "--manifest", str(tmp_path / "manifest.json")]) == 0
    assert target.read_bytes() == b"third"


def test_missing_mirror_folder_is_bad_usage(tmp_path, capsys):
    assert main(["--mirror", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_failed_download_says_what_to_do(tmp_path, capsys, monkeypatch):
    make_mirror(tmp_path)
    import urllib.request

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    status = main(["--dest", str(tmp_path / "out"), "--manifest", str(tmp_path / "manifest.json")])
    err = capsys.readouterr().err
    assert status == 1
    assert "--mirror" in err and "train/a/one.jpg" in err
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_project_manifest_matches_the_seed_folder(seed_data):
    ours = json.loads((Path(__file__).resolve().parents[2] / "images/sample-manifest.json").read_text())
    for entry in ours["files"]:
        data = (seed_data / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
