"""Reading images of every mode as RGB, decoding masks, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss.data.base import voc_palette
from wsss.data.image_io import decode_rgb_mask, read_image, read_mask, write_image, write_mask
from wsss.data.voc import image_size
from wsss.errors import DataError

RNG = np.random.default_rng(0)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "g.png")
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_palette_image_gives_palette_colours(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    img.save(tmp_path / "p.png")
    expected = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)[indices]
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_cmyk_tiff_converted_to_rgb(tmp_path):
    cmyk = np.zeros((2, 3, 4), dtype=np.uint8)
    cmyk[0, 0] = (10, 20, 30, 0)
    cmyk[1, 2] = (200, 0, 100, 255)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    rgb = read_image(tmp_path / "c.tif")
    assert tuple(rgb[0, 0]) == (245, 235, 225)  # no black ink: RGB = 255 - CMY
    assert tuple(rgb[1, 2]) == (0, 0, 0)  # full black ink
    assert tuple(rgb[0, 1]) == (255, 255, 255)  # no ink


def test_cmyk_jpeg_round_trips_approximately(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :8] = (200, 40, 40)
    rgb[:, 8:] = (30, 90, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as img:
        assert img.mode == "CMYK"
    out = read_image(tmp_path / "c.jpg").astype(int)
    assert np.abs(out[4:12, 2:6] - rgb[4:12, 2:6]).max() <= 8
    assert np.abs(out[4:12, 10:14] - rgb[4:12, 10:14]).max() <= 8


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 65535, 32768, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode.startswith("I")
    rgb = read_image(tmp_path / "d.png")
    expected = np.round(values / 65535 * 255).astype(np.uint8)  # 0, 255, 128, 1
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 2], expected)


def test_truncated_jpeg_raises_data_error_naming_file(tmp_path):
    path = tmp_path / "t.jpg"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg.*truncated") as info:
        read_image(path)
    assert info.value.kind == "unreadable image" and info.value.path == path


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        read_image(tmp_path / "none.png")
    assert info.value.kind == "missing image"
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(DataError, match=r"x\.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError) as info:
        read_mask(tmp_path / "none.png")
    assert info.value.kind == "missing mask"


def test_palette_and_gray_masks_are_indices(tmp_path):
    mask = np.array([[0, 1, 255], [20, 3, 0]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask)
    Image.fromarray(mask, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", num_classes=20), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", num_classes=20), mask)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(
            np.asarray(img.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_palette()
        )
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_mask_class_ids_out_of_range(tmp_path):
    write_mask(tmp_path / "m.png", np.array([[0, 4, 255, 7]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"\[4, 7\] outside 0\.\.3") as info:
        read_mask(tmp_path / "m.png", num_classes=3)
    assert info.value.kind == "class id out of range"


def test_rgb_mask_decoded_through_voc_palette(tmp_path):
    palette = voc_palette()
    mask = np.array([[0, 1, 15], [255, 20, 1]], dtype=np.uint8)
    Image.fromarray(palette[mask], mode="RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", num_classes=20), mask)
    with pytest.raises(DataError, match=r"class ids \[15, 20\] outside 0\.\.3") as info:
        read_mask(tmp_path / "rgb.png", num_classes=3)
    assert info.value.kind == "class id out of range"


def test_rgb_mask_unknown_colour_names_file_and_colour(tmp_path):
    rgb = voc_palette()[np.zeros((3, 3), dtype=np.uint8)]
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "bad.png")
    with pytest.raises(
        DataError, match=r"bad\.png: 1 colour\(s\) not in the palette: \(1, 2, 3\)"
    ) as info:
        read_mask(tmp_path / "bad.png")
    assert info.value.kind == "unknown colour"


def test_decode_rgb_mask_matches_pixel_by_pixel_lookup():
    palette = voc_palette()
    mask = RNG.choice(np.r_[0:21, 255], size=(9, 11)).astype(np.uint8)
    rgb = palette[mask]
    lookup = {tuple(int(v) for v in palette[i]): i for i in [*range(21), 255]}
    expected = np.array([[lookup[tuple(int(v) for v in px)] for px in row] for row in rgb])
    np.testing.assert_array_equal(decode_rgb_mask(rgb, num_classes=20), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_write_image_lossless_formats_round_trip(tmp_path, suffix):
    image = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    write_image(tmp_path / f"i{suffix}", image)
    np.testing.assert_array_equal(read_image(tmp_path / f"i{suffix}"), image)


def test_write_mask_rejects_non_2d(tmp_path):
    with pytest.raises(ValueError, match="H×W"):
        write_mask(tmp_path / "m.png", np.zeros((2, 2, 3), dtype=np.uint8))


@pytest.mark.parametrize(("orientation", "turns"), [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied_and_image_size_agrees(tmp_path, orientation, turns):
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:4, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    image = read_image(path)
    expected = np.rot90(stored, k=turns)  # np.rot90: counter-clockwise quarter turns
    assert image.shape == expected.shape
    np.testing.assert_allclose(image, expected, atol=40)
    assert image_size(path) == image.shape[:2]
