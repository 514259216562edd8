"""`python -m model predict`: text and JSON output, exit codes, and every kind of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devtools.samples import image_bytes, make_photo
from model.cli import main
from tests.model.test_preprocess import bomb_png


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    files = {
        "good.jpg": image_bytes(make_photo(300, 200, seed=1), "JPEG"),
        "good.png": image_bytes(make_photo(200, 300, colour=(20, 200, 40), seed=2), "PNG"),
        "doc.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
        "cut.jpg": image_bytes(make_photo(640, 480, seed=3), "JPEG")[:3000],
        "empty.jpg": b"",
        "dot.png": image_bytes(Image.new("RGB", (1, 1)), "PNG"),
        "bomb.png": bomb_png(30000, 30000),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def test_text_output(tiny_checkpoint, photos, capsys):
    status = main(["predict", "--checkpoint", str(tiny_checkpoint), str(photos["good.jpg"]), str(photos["good.png"])])
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 0
    assert len(out) == 2
    for line, name in zip(out, ["good.jpg", "good.png"]):
        assert name in line and "%" in line
        assert any(label in line for label in ("kurti", "saree", "shirt"))


def test_json_output_matches_the_model(tiny_checkpoint, classifier, photos, capsys):
    status = main(["predict", "--checkpoint", str(tiny_checkpoint), "--json", "--top", "2", "--precision", "fp32",
                   str(photos["good.jpg"])])
    results = json.loads(capsys.readouterr().out)
    assert status == 0
    [result] = results
    assert set(result) == {"file", "label", "confidence", "top"}
    assert len(result["top"]) == 2 and result["top"][0]["label"] == result["label"]
    probabilities = classifier.probabilities(classifier.preprocess(Image.open(photos["good.jpg"]))[None])[0]
    assert result["confidence"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert result["label"] == classifier.class_names[int(probabilities.argmax())]


def test_bad_inputs_each_get_one_line_and_the_rest_are_classified(tiny_checkpoint, photos, capsys):
    order = ["good.jpg", "doc.pdf", "cut.jpg", "empty.jpg", "dot.png", "bomb.png", "missing.jpg", "good.png"]
    paths = [str(photos.get(name, Path(photos["good.jpg"]).parent / name)) for name in order]
    status = main(["predict", "--checkpoint", str(tiny_checkpoint), "--json", *paths])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert status == 1
    assert [Path(r["file"]).name for r in results] == order
    assert "label" in results[0] and "label" in results[-1]
    reasons = {Path(r["file"]).name: r["error"] for r in results[1:-1]}
    assert "not an image" in reasons["doc.pdf"]
    assert "truncated" in reasons["cut.jpg"]
    assert "empty" in reasons["empty.jpg"]
    assert "too small" in reasons["dot.png"]
    assert "too large" in reasons["bomb.png"]
    assert "no such file" in reasons["missing.jpg"]
    assert "Traceback" not in captured.err


def test_text_mode_errors_go_to_stderr(tiny_checkpoint, photos, capsys):
    status = main(["predict", "--checkpoint", str(tiny_checkpoint), str(photos["doc.pdf"]), str(photos["good.jpg"])])
    captured = capsys.readouterr()
    assert status == 1
    assert "doc.pdf: error:" in captured.err and "good.jpg:" in captured.out


def test_bad_usage_and_bad_checkpoint_exit_2(tmp_path, photos, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(photos["good.jpg"])])
    assert info.value.code == 2
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(SystemExit) as info:
        main(["predict", "--checkpoint", str(tmp_path / "junk.pt"), str(photos["good.jpg"])])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") >= 1


def test_the_module_runs_as_a_program_with_bounded_memory(tiny_checkpoint, photos):
    """The decompression bomb must not be decoded: the whole process stays far below its 2.7 GB of pixels."""
    code = (
        "import re, sys\n"
        "from model.cli import main\n"
        "status = main(sys.argv[1:])\n"
        # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec.
        "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print('maxrss_kb', peak, file=sys.stderr)\n"
        "raise SystemExit(status)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, "predict", "--checkpoint", str(tiny_checkpoint), str(photos["bomb.png"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "too large" in completed.stderr and "Traceback" not in completed.stderr
    maxrss_mb = int(completed.stderr.split("maxrss_kb")[1].split()[0]) / 1024
    assert maxrss_mb < 1500
