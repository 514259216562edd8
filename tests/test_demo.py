"""``make demo`` in a fresh clone: no ../shared beside it, no images/sample, no venv of its own.

The clone has only what is committed (so this tests HEAD of the tree under test, not the working copy).
The interpreter is this test run's: ``PY=`` points make at it and ``STAMP=`` at a fresh stamp file, so the
install step sees itself as done and nothing is installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devtools.samples import jpeg

REPO = Path(__file__).resolve().parents[1]
SMALL_HEAT_MAPS = "WHY_COARSE_PATCH=112 WHY_COARSE_STRIDE=112 WHY_PATCH=112 WHY_STRIDE=56"


def load_transcript():
    spec = importlib.util.spec_from_file_location("transcript_script", REPO / "tools" / "transcript.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clone_head(target: Path) -> Path:
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout")
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, capture_output=True, timeout=60)
    return target


@pytest.mark.timeout(180)
def test_make_demo_in_a_fresh_clone_writes_the_heat_map(tmp_path, tiny_checkpoint):
    clone = clone_head(tmp_path / "checkout")
    assert not (clone.parent / "shared").exists() and not (clone / "images" / "sample").exists()
    stamp = tmp_path / "installed"
    stamp.touch()  # after the clone, so newer than its pyproject.toml: make skips the install
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MAKE") and name not in ("MFLAGS", "CHECKPOINT_PATH")}  # no outer make's settings
    env["PYTHONPATH"] = str(clone)
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", f"PY={sys.executable}", f"STAMP={stamp}",
         f"CHECKPOINT={tiny_checkpoint}", f"DEMO_SETTINGS={SMALL_HEAT_MAPS}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "sending a generated picture" in output and "make sample" in output, output[:2000]
    heat_map = clone / "images" / "demo-why.png"
    assert heat_map.is_file(), output[-4000:]
    assert heat_map.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(heat_map) as picture:
        picture.verify()
        assert picture.format == "PNG" and min(picture.size) >= 200, picture.size


def test_the_demo_photo_is_a_fetched_sample_photo_when_there_is_one(tmp_path):
    transcript = load_transcript()
    assert transcript.sample_photo(tmp_path / "absent") is None
    assert transcript.sample_photo(tmp_path) is None
    for relative in ("train/kurti/kurti1.jpeg", "test/shirt/shirt2.jpeg", "test/kurti/notes.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(jpeg(0))
    assert transcript.sample_photo(tmp_path) == tmp_path / "test" / "shirt" / "shirt2.jpeg"  # the test split first
    preferred = tmp_path / "test" / "saree" / "saree1.jpeg"
    preferred.parent.mkdir(parents=True)
    preferred.write_bytes(jpeg(1))
    assert transcript.sample_photo(tmp_path) == preferred
