"""Decoding and preprocessing: every image mode, EXIF orientation, size limits, damaged files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from devtools.samples import image_bytes, make_photo
from model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    PreprocessConfig,
    crop_box,
    open_image,
    preprocess,
)


def exif_rotated_jpeg(orientation: int) -> tuple[bytes, Image.Image]:
    """A 300x200 JPEG whose left half is red, with an EXIF orientation tag."""
    array = np.zeros((200, 300, 3), dtype=np.uint8)
    array[:, :150] = (255, 0, 0)
    array[:, 150:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes(image, "JPEG", exif=exif.tobytes(), quality=95), image


def test_exif_orientation_is_applied():
    data, _ = exif_rotated_jpeg(6)  # 6 = rotate 90 degrees clockwise to display
    image = open_image(data)
    assert image.size == (200, 300)
    top = np.asarray(image)[10, 100]
    assert top[0] > 200 and top[2] < 60, "the red half must end up on top after a clockwise rotation"


def sixteen_bit(image: Image.Image) -> Image.Image:
    array = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(array)  # uint16 arrays become mode I;16


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_every_saved_mode_decodes_to_rgb(mode):
    base = make_photo(64, 48)
    image = sixteen_bit(base) if mode == "I;16" else base.convert(mode)
    assert image.mode == mode
    fmt = {"CMYK": "TIFF"}.get(mode, "PNG")
    decoded = open_image(image_bytes(image, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == (64, 48)


@pytest.mark.parametrize("mode", ["PA", "I", "F", "La", "RGBa", "YCbCr", "HSV"])
def test_in_memory_modes_preprocess(mode):
    base = make_photo(64, 48)
    if mode in ("I", "F"):
        image = sixteen_bit(base).convert(mode)
    else:
        image = base.convert("P").convert(mode) if mode == "PA" else base.convert(mode)
    tensor = preprocess(image)
    assert tensor.shape == (3, 224, 224) and torch.isfinite(tensor).all()


def test_sixteen_bit_grey_keeps_its_brightness():
    grey = np.full((32, 32), 40000, dtype=np.uint16)
    decoded = open_image(image_bytes(Image.fromarray(grey), "PNG"))
    assert abs(int(np.asarray(decoded)[0, 0, 0]) - 40000 // 257) <= 1


def test_transparency_goes_over_white():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((10, 200, 10, 255), (0, 0, 16, 32))
    decoded = np.asarray(open_image(image_bytes(rgba, "PNG")))
    assert tuple(decoded[5, 25]) == (255, 255, 255)
    assert tuple(decoded[5, 5]) == (10, 200, 10)


def test_palette_with_transparency_goes_over_white():
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 8, 16))
    palette.info["transparency"] = 0
    decoded = np.asarray(open_image(image_bytes(palette, "PNG", transparency=0)))
    assert tuple(decoded[2, 12]) == (255, 255, 255)
    assert tuple(decoded[2, 2]) == (255, 0, 0)


def test_preprocess_shape_and_normalization():
    grey = Image.new("RGB", (500, 300), tuple(round(m * 255) for m in IMAGENET_MEAN))
    tensor = preprocess(grey)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    assert tensor.abs().max() < 0.02, "the ImageNet mean colour normalizes to zero"
    white = preprocess(Image.new("RGB", (224, 224), (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-5)


def test_normalize_matches_torchvision_to_float_precision():
    from torchvision.transforms import v2

    from model.preprocess import normalize

    image = make_photo(224, 224)
    reference = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    tensor = normalize(image)
    assert tensor.is_contiguous() and tensor.dtype == torch.float32
    assert torch.allclose(tensor, reference, atol=1e-5), float((tensor - reference).abs().max())


@pytest.mark.parametrize("size", [(508, 800), (1000, 224), (300, 200), (257, 1000), (224, 224)])
def test_one_step_resize_and_crop_equals_resize_then_crop(size):
    from model.preprocess import resize_and_crop

    image = make_photo(*size)
    config = PreprocessConfig()
    scale = config.resize / min(size)
    whole = image.resize((max(config.crop, round(size[0] * scale)), max(config.crop, round(size[1] * scale))),
                         Image.BILINEAR, reducing_gap=None)
    left, top = (whole.width - config.crop) // 2, (whole.height - config.crop) // 2
    two_steps = np.asarray(whole.crop((left, top, left + config.crop, top + config.crop)), dtype=np.int16)
    one_step = np.asarray(resize_and_crop(image, config), dtype=np.int16)
    assert one_step.shape == two_steps.shape == (224, 224, 3)
    assert np.abs(one_step - two_steps).max() <= 1


def denormalize(tensor: torch.Tensor, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """The inverse of normalize: a 3 x H x W tensor back to an H x W x 3 uint8 array."""
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    array = (tensor.detach().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return (array * 255).round().astype(np.uint8)


def test_centre_crop_keeps_the_centre():
    wide = np.zeros((256, 512, 3), dtype=np.uint8)
    wide[:, 200:312] = 255  # a white band in the middle
    tensor = preprocess(Image.fromarray(wide))
    restored = denormalize(tensor)
    assert restored.shape == (224, 224, 3)
    assert restored[112, 112].min() > 250 and restored[112, 0].max() < 5
    left, top, right, bottom = crop_box((512, 256))
    assert (left, top, right, bottom) == pytest.approx((144, 16, 368, 240))


def test_crop_box_of_tall_photo_matches_what_the_model_sees():
    config = PreprocessConfig()
    left, top, right, bottom = crop_box((300, 600), config)
    assert right - left == pytest.approx(bottom - top)
    assert left == pytest.approx(300 * 16 / 256, abs=1.5) and top == pytest.approx(600 / 2 - (right - left) / 2, abs=2)


def test_jpeg_draft_decodes_smaller_but_keeps_enough_pixels():
    big = image_bytes(make_photo(2000, 1500), "JPEG")
    full = open_image(big)
    drafted = open_image(big, draft_size=256)
    assert full.size == (2000, 1500)
    assert min(drafted.size) >= 256 and drafted.size[0] < 2000


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF", "not an image"),
        (b"hello, world", "not an image"),
    ],
)
def test_non_images_are_refused_with_a_clear_message(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_truncated_jpeg_is_refused():
    data = image_bytes(make_photo(640, 480), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2])


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="too small"):
        open_image(image_bytes(Image.new("RGB", (1, 1)), "PNG"))


def test_decompression_bomb_is_refused_before_decoding():
    # A 30000 x 30000 one-colour PNG is a few hundred kB on disk and 2.7 GB decoded.
    bomb = bomb_png(30000, 30000)
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match="too large"):
        open_image(bomb)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` grey pixels, built row by row so the test itself stays small."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_paths_are_read_and_missing_ones_explained(tmp_path):
    path = tmp_path / "photo.png"
    make_photo(40, 30).save(path)
    assert open_image(path).size == (40, 30)
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="folder"):
        open_image(tmp_path)
