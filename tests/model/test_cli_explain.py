"""`python -m model explain`: a heat-map PNG and the raw grid, with clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from devtools.samples import make_photo
from model.cli import main
from model.occlusion import OcclusionExplainer


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "photo.jpg"
    make_photo(360, 240, seed=5).save(path, quality=92)
    return path


def test_explain_writes_png_and_grid(tiny_checkpoint, classifier, photo_path, tmp_path, capsys):
    out, grid = tmp_path / "out" / "why.png", tmp_path / "map.npy"
    status = main(
        ["explain", "--checkpoint", str(tiny_checkpoint), str(photo_path), "-o", str(out),
         "--patch", "56", "--stride", "28", "--save-map", str(grid), "--precision", "fp32"]
    )
    assert status == 0
    assert "7x7" in capsys.readouterr().out
    occlusion_map = np.load(grid)
    assert occlusion_map.shape == (7, 7) and occlusion_map.dtype == np.float32
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        assert picture.width / picture.height < 1.6  # the photo plus title and colour bar, not a bare square
    # The saved grid is the explainer's map for the predicted class of the same preprocessed photo.
    tensor = classifier.preprocess(classifier.open(photo_path))
    expected = OcclusionExplainer(classifier.network, patch=56, stride=28)(tensor)
    np.testing.assert_allclose(occlusion_map, expected, atol=1e-5)


def test_explain_bad_image_and_bad_settings(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4 nothing")
    assert main(["explain", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "doc.pdf"), "-o", str(tmp_path / "x.png")]) == 1
    assert "not an image" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main(["explain", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "doc.pdf"), "-o", str(tmp_path / "x.png"),
                 "--patch", "0"]) == 2


def test_explain_another_class_with_target(tiny_checkpoint, classifier, photo_path, tmp_path, capsys):
    grid = tmp_path / "map.npy"
    tensor = classifier.preprocess(classifier.open(photo_path))
    predicted = classifier.predict_tensors([tensor])[0].label
    other = next(name for name in classifier.class_names if name != predicted)
    assert main(["explain", "--checkpoint", str(tiny_checkpoint), str(photo_path), "-o", str(tmp_path / "why.png"),
                 "--patch", "112", "--stride", "112", "--target", other, "--save-map", str(grid),
                 "--precision", "fp32"]) == 0
    assert f"map for {other}" in capsys.readouterr().out
    expected = OcclusionExplainer(classifier.network, patch=112, stride=112).explain(
        tensor, target=classifier.class_names.index(other)).occlusion_map
    np.testing.assert_allclose(np.load(grid), expected, atol=1e-6)


def test_explain_unknown_target_is_a_clear_error(tiny_checkpoint, photo_path, tmp_path, capsys):
    assert main(["explain", "--checkpoint", str(tiny_checkpoint), str(photo_path), "-o", str(tmp_path / "x.png"),
                 "--target", "sherwani"]) == 2
    err = capsys.readouterr().err
    assert "'sherwani' is not a class" in err and "kurti" in err
    assert not (tmp_path / "x.png").exists()
