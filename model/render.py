"""Drawing an occlusion map over the photo it explains: PNG bytes readable on a phone.

The whole photo is shown with its aspect ratio; the heat map covers only the centre-crop region the
model saw (``crop_box``), smoothly upsampled, and the rest of the photo is dimmed. The colour scale is
diverging and centred at 0 because the map is signed: hiding a patch can also raise the score.

The title, colour-bar label and legend come from the caller (``texts``, e.g. in the user's language; English
by default). Text is drawn in DejaVu Sans (matplotlib's own) with Noto Sans Devanagari (shipped in
model/fonts, SIL OFL) as the fallback for Hindi. Devanagari needs shaping (vowel signs placed before their
consonant, conjuncts); matplotlib shapes text with libraqm from 3.11 on, which pyproject.toml requires.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager
from matplotlib.cm import ScalarMappable
from matplotlib.colors import TwoSlopeNorm
from PIL import Image, ImageDraw

from .preprocess import PreprocessConfig, crop_box

OUTPUT_WIDTH_PX = 900
DPI = 100
DISPLAY_LONG_SIDE = 1000  # the photo is shrunk to this before drawing: more would not show and costs time
DIM_OUTSIDE = 0.35  # brightness kept outside the region the model saw
HEAT_ALPHA = 0.55
MAX_IMAGE_ASPECT = 1.3  # height / width of the drawn photo at most
COLOUR_MAP = "RdBu_r"  # red = positive drop (important), blue = negative, white = no effect
FONT_DIR = Path(__file__).parent / "fonts"
FONT_FAMILIES = ["DejaVu Sans", "Noto Sans Devanagari"]  # per glyph: the first font that has it


def _register_fonts() -> None:
    for path in sorted(FONT_DIR.glob("*.ttf")):
        font_manager.fontManager.addfont(str(path))


_register_fonts()


def english_texts(label: str, confidence: float) -> tuple[str, str, str]:
    """The default title, colour-bar label and legend."""
    return (f"{label} — {confidence:.0%} confident", f"drop in P({label}) when the patch is covered",
            f"Red: covering this area lowers the '{label}' score the most")


def _axis_samples(crop: int, cells: int, patch: int | None, stride: int | None) -> np.ndarray:
    """Crop-pixel coordinate of each map cell's centre along one axis (where its patch was centred)."""
    if patch is not None and stride is not None:
        return np.arange(cells) * stride + (patch - 1) / 2.0
    # Unknown settings: assume the cells tile the crop evenly.
    return (np.arange(cells) + 0.5) * crop / cells - 0.5


def upsample_map(occlusion_map: np.ndarray, crop: int, patch: int | None = None, stride: int | None = None) -> np.ndarray:
    """The (G, G) map as a smooth crop x crop array: bilinear between patch centres, constant beyond."""
    occlusion_map = np.asarray(occlusion_map, dtype=np.float64)
    rows, cols = occlusion_map.shape
    pixels = np.arange(crop, dtype=np.float64)
    row_samples = _axis_samples(crop, rows, patch, stride)
    col_samples = _axis_samples(crop, cols, patch, stride)
    along_cols = np.stack([np.interp(pixels, col_samples, line) for line in occlusion_map])  # rows x crop
    return np.stack([np.interp(pixels, row_samples, along_cols[:, x]) for x in range(crop)], axis=1)


def _display_photo(photo: Image.Image) -> Image.Image:
    photo = photo.convert("RGB")
    scale = DISPLAY_LONG_SIDE / max(photo.size)
    if scale < 1:
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BILINEAR)
    return photo


def render_overlay(
    photo: Image.Image,
    occlusion_map: np.ndarray,
    label: str,
    confidence: float,
    *,
    preprocess_config: PreprocessConfig = PreprocessConfig(),
    patch: int | None = None,
    stride: int | None = None,
    texts: tuple[str, str, str] | None = None,
) -> bytes:
    """PNG bytes: the photo, the map over the region the model saw, a colour bar, title and legend
    (``texts``: title, colour-bar label, legend; English by default)."""
    title, bar_label, legend = texts or english_texts(label, confidence)
    occlusion_map = np.asarray(occlusion_map, dtype=np.float32)
    if occlusion_map.ndim != 2 or occlusion_map.size == 0:
        raise ValueError(f"occlusion_map must be a non-empty 2-D array, got shape {occlusion_map.shape}")
    occlusion_map = np.nan_to_num(occlusion_map)
    original_size = photo.size
    shown = _display_photo(photo)
    scale_x, scale_y = shown.width / original_size[0], shown.height / original_size[1]
    left, top, right, bottom = crop_box(original_size, preprocess_config)
    left, right, top, bottom = left * scale_x, right * scale_x, top * scale_y, bottom * scale_y

    heat = upsample_map(occlusion_map, preprocess_config.crop, patch, stride)
    limit = float(np.abs(occlusion_map).max()) or 1e-6
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)

    # Layout in inches: title band, the photo at its own aspect ratio, the colour bar, the legend line.
    # A tall photo is drawn narrower (centred) so that the whole picture fits a phone screen.
    width_in = OUTPUT_WIDTH_PX / DPI
    image_w_in = width_in - 0.4
    image_h_in = image_w_in * shown.height / shown.width
    if image_h_in > MAX_IMAGE_ASPECT * image_w_in:
        image_h_in = MAX_IMAGE_ASPECT * image_w_in
        image_w_in = image_h_in * shown.width / shown.height
    title_in, bar_in, legend_in = 0.9, 1.05, 0.55
    height_in = title_in + image_h_in + bar_in + legend_in
    size = (round(image_w_in * DPI), round(image_h_in * DPI))
    picture = _composite(shown, heat, norm, (left, top, right, bottom), size)
    figure = plt.figure(figsize=(width_in, height_in), dpi=DPI)
    try:
        figure.text(0.5, 1 - 0.45 / height_in, title, ha="center", va="center", fontsize=24, fontweight="bold",
                    family=FONT_FAMILIES)
        bar_axes = figure.add_axes((0.1, (legend_in + 0.6) / height_in, 0.8, 0.22 / height_in))
        bar = figure.colorbar(ScalarMappable(norm=norm, cmap=COLOUR_MAP), cax=bar_axes, orientation="horizontal")
        bar.solids.set_alpha(1.0)
        bar.ax.tick_params(labelsize=13)
        bar.set_ticks([-limit, 0.0, limit])
        bar.set_ticklabels([_tick_label(-limit), "0", _tick_label(limit)])
        bar.set_label(bar_label, fontsize=13, family=FONT_FAMILIES)
        figure.text(0.5, 0.3 / height_in, legend, ha="center", va="center", fontsize=16, family=FONT_FAMILIES)
        figure.canvas.draw()
        canvas = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3])
    finally:
        plt.close(figure)
    # The picture is pasted into the drawn page rather than drawn by matplotlib (see _composite).
    canvas.paste(picture, (round((width_in - image_w_in) / 2 * DPI), round(title_in * DPI)))
    buffer = io.BytesIO()
    # zlib level 3, not PNG's default 6: 0.06 against 0.16 s of one core per drawing (900 x 1368), 12% larger
    # (707 against 629 kB); a drawing per heat-map level is CPU the maps share.
    canvas.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _composite(shown: Image.Image, heat: np.ndarray, norm: TwoSlopeNorm, box: tuple[float, float, float, float],
               size: tuple[int, int]) -> Image.Image:
    """The picture at its drawn pixel ``size``: the photo, dimmed outside ``box`` (in ``shown``'s pixels), the heat
    map upsampled bilinearly as data, then coloured and blended over the box, and the box outlined in white.

    Composed in 8-bit PIL images with one colour lookup table, and pasted into the page: matplotlib's imshow had
    resampled a float photo and a float heat image itself (float RGBA at the output size), ~100 MB of transient
    memory per drawing of a 1056 x 671 photo (tracemalloc; the same for a uint8 image or figimage)."""
    photo = shown.resize(size, Image.BILINEAR)
    scale_x, scale_y = size[0] / shown.width, size[1] / shown.height
    left, top = max(0, round(box[0] * scale_x)), max(0, round(box[1] * scale_y))
    right, bottom = min(size[0], round(box[2] * scale_x)), min(size[1], round(box[3] * scale_y))
    picture = photo.point(lambda value: round(value * DIM_OUTSIDE))
    if right > left and bottom > top:
        region = (left, top, right, bottom)
        values = Image.fromarray(heat.astype(np.float32)).resize((right - left, bottom - top), Image.BILINEAR)
        levels = np.clip(np.asarray(norm(np.asarray(values))) * 255 + 0.5, 0, 255).astype(np.uint8)
        table = (plt.get_cmap(COLOUR_MAP)(np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
        picture.paste(Image.blend(photo.crop(region), Image.fromarray(table[levels]), HEAT_ALPHA), region[:2])
        ImageDraw.Draw(picture).rectangle((left, top, right - 1, bottom - 1), outline="white", width=2)
    return picture


def _tick_label(value: float) -> str:
    """Two significant digits, so a confident model's tiny drops (e.g. 0.00031) do not all read "+0.00"."""
    return f"{value:+.2g}"
