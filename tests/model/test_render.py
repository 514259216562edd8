"""The heat-map PNG: the whole photo at its aspect ratio, readable size, robust to odd maps."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.render import render_overlay, upsample_map

GREEN = (0, 200, 0)


def _photo_region(png: bytes) -> tuple[int, int]:
    """Width and height of the green photo in the rendered picture (heat overlay and dimming keep it green)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    ys, xs = np.nonzero((green - red > 50) & (green - blue > 50))
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


@pytest.mark.parametrize("size", [(640, 360), (300, 600), (500, 500)])
def test_png_shows_the_whole_photo_with_its_aspect_ratio(size):
    photo = Image.new("RGB", size, GREEN)
    png = render_overlay(photo, np.zeros((7, 7), np.float32), "saree", 0.87, patch=56, stride=28)
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG"
        assert 800 <= picture.width <= 1000
    width, height = _photo_region(png)
    assert width / height == pytest.approx(size[0] / size[1], rel=0.02)


def test_map_covers_the_centre_crop_only():
    """A wide photo: the model saw the centre square, so the sides are dimmed and the heat is in the middle."""
    photo = Image.new("RGB", (800, 400), (128, 128, 128))
    png = render_overlay(photo, np.ones((3, 3), np.float32), "kurti", 0.5)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    reddish = pixels[..., 0] - pixels[..., 2] > 25
    rows = np.nonzero(reddish.sum(axis=1) > 100)[0]  # rows crossing the heat block (the colour bar is narrower red)
    middle = rows[len(rows) // 2]
    red_columns = np.nonzero(reddish[middle])[0]
    photo_columns = np.nonzero(np.abs(pixels[middle] - 255).sum(axis=1) > 30)[0]
    share = (red_columns.max() - red_columns.min() + 1) / (photo_columns.max() - photo_columns.min() + 1)
    # Resized to 512 x 256 then cropped to 224 x 224: the model saw 224/512 of the width.
    assert share == pytest.approx(224 / 512, abs=0.02)


def test_the_map_is_coloured_by_sign_and_blended_over_the_photo_inside_a_white_outline():
    """A map whose left half raises the score and right half lowers it: blue on the left, red on the right, both
    blended with the grey photo (neither pure colour nor grey), the dimmed surround darker, the box outlined."""
    photo = Image.new("RGB", (400, 400), (128, 128, 128))
    occlusion_map = np.tile(np.array([-1.0, -1.0, 1.0, 1.0], np.float32), (4, 1))
    pixels = np.asarray(Image.open(io.BytesIO(render_overlay(photo, occlusion_map, "kurti", 0.5))).convert("RGB")).astype(int)
    grey = np.all(np.abs(pixels - 128) <= 3, axis=-1)
    reddish = (pixels[..., 0] - pixels[..., 2] > 25) & ~grey
    bluish = (pixels[..., 2] - pixels[..., 0] > 25) & ~grey
    rows = np.nonzero((reddish.sum(axis=1) > 100) & (bluish.sum(axis=1) > 100))[0]  # the map's rows, and the bar's
    middle = rows[len(rows) // 3]  # within the map (the colour bar's few rows come last)
    red_columns, blue_columns = np.nonzero(reddish[middle])[0], np.nonzero(bluish[middle])[0]
    assert len(red_columns) > 100 and len(blue_columns) > 100
    assert blue_columns.mean() < red_columns.mean()  # negative on the left, as in the map
    assert pixels[middle, red_columns[-20], 1] > 30  # blended with the grey: the bare +1 colour (103, 0, 31) has no green
    inside = np.nonzero(reddish[middle] | bluish[middle])[0]
    white = np.nonzero(np.all(pixels[middle] >= 245, axis=-1))[0]
    left_edge = white[(white < inside.min()) & (white > inside.min() - 6)]
    assert len(left_edge), "the region the model saw is outlined in white"
    dimmed = pixels[middle, left_edge.min() - 10]
    assert np.all(dimmed < 100), dimmed  # the crop fills the square photo here; just outside it lies the page


def test_negative_nan_and_odd_shaped_maps_render():
    photo = Image.new("RGB", (320, 240), GREEN)
    occlusion_map = np.array([[-0.2, 0.1, np.nan], [0.0, 0.3, -0.1]], dtype=np.float32)
    assert render_overlay(photo, occlusion_map, "shirt", 0.4).startswith(b"\x89PNG")


def test_bad_map_is_rejected():
    with pytest.raises(ValueError):
        render_overlay(Image.new("RGB", (100, 100)), np.zeros(5), "shirt", 0.4)


def test_upsampled_map_puts_each_value_at_its_patch_centre():
    occlusion_map = np.arange(9, dtype=np.float32).reshape(3, 3)
    heat = upsample_map(occlusion_map, 224, patch=16, stride=104)
    # Patch (row 1, col 2) covers pixels 104..119 x 208..223: its centre carries its value exactly.
    assert heat[111, 215] == pytest.approx(occlusion_map[1, 2], abs=0.1)
    assert heat.shape == (224, 224)
    assert heat.min() == pytest.approx(0) and heat.max() == pytest.approx(8)


def test_colour_bar_labels_keep_small_values_readable():
    from model.render import _tick_label

    assert _tick_label(0.00031) == "+0.00031"
    assert _tick_label(-0.25) == "-0.25"


HINDI = "कुर्ती विश्वास हिस्से"  # a reph, a conjunct and a vowel sign drawn before its consonant: shaping shows


def _ink_width(picture: Image.Image) -> int:
    xs = np.nonzero((np.asarray(picture.convert("L")) < 128).any(axis=0))[0]
    return int(xs.max() - xs.min() + 1)


def test_matplotlib_shapes_devanagari_like_a_shaping_engine():
    """The heat map's Hindi: matplotlib (libraqm) lays the words out as HarfBuzz does (Pillow's raqm layout),
    not glyph by glyph (Pillow's basic layout, visibly wider with loose vowel signs and viramas)."""
    import matplotlib.pyplot as plt
    from PIL import ImageDraw, ImageFont, features

    from model.render import FONT_DIR, FONT_FAMILIES

    if not features.check("raqm"):
        pytest.skip("Pillow without raqm: no reference shaping here")
    font_file = str(FONT_DIR / "NotoSansDevanagari-Regular.ttf")

    def pillow(layout) -> int:
        font = ImageFont.truetype(font_file, 48, layout_engine=layout)
        picture = Image.new("L", (1200, 120), 255)
        ImageDraw.Draw(picture).text((10, 20), HINDI, font=font, fill=0)
        return _ink_width(picture)

    figure = plt.figure(figsize=(12, 1.2), dpi=100)
    figure.text(0.01, 0.3, HINDI, family=FONT_FAMILIES, fontsize=48 * 72 / 100)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    shaped, unshaped, drawn = pillow(ImageFont.Layout.RAQM), pillow(ImageFont.Layout.BASIC), _ink_width(Image.open(buffer))
    assert abs(unshaped - shaped) > 0.1 * shaped, "the check must tell shaped from unshaped text"
    assert abs(drawn - shaped) <= 0.03 * shaped, (drawn, shaped, unshaped)


def test_hindi_texts_find_every_glyph(recwarn):
    """DejaVu Sans for Latin, digits and signs, the shipped Noto Sans Devanagari for Hindi: no missing glyph."""
    from matplotlib import font_manager

    from model.render import FONT_DIR

    found = font_manager.findfont(font_manager.FontProperties(family="Noto Sans Devanagari"), fallback_to_default=False)
    assert found.startswith(str(FONT_DIR))
    texts = ("साड़ी — 62% विश्वास", "हिस्सा ढकने पर P(साड़ी) में गिरावट", "लाल: इस हिस्से को ढकने से 'साड़ी' का स्कोर")
    png = render_overlay(Image.new("RGB", (300, 400), GREEN), np.ones((3, 3), np.float32), "saree", 0.62, texts=texts)
    assert png.startswith(b"\x89PNG")
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
