"""The one input policy for images and prompts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eimsdk.errors import InputError
from eimsdk.images import check_prompts, load_image, model_size, to_model_tensor, to_pil


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    im = Image.new("RGB", (20, 12), (200, 40, 40)).convert(mode)
    out = load_image(im)
    assert out.mode == "RGB" and out.size == (20, 12)


def test_transparent_pixels_composite_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(im).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_scales_to_eight_bit():
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    assert load_image(Image.fromarray(arr)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(arr).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (30, 10), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif)
    assert load_image(path).size == (10, 30)


def test_corrupt_file_names_the_argument(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputError, match=r"image='.*bad.png' could not be read"):
        load_image(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_arrays_are_validated():
    with pytest.raises(InputError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 3.0, dtype=np.float32))
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))


def test_model_size_rounds_to_multiple():
    assert model_size((33, 47), 16) == (32, 48)
    assert model_size((3, 3), 16) == (16, 16)


def test_to_model_tensor_range_and_sizes():
    ims = [Image.new("RGB", (37, 29), (255, 0, 0)), Image.new("L", (10, 10), 0)]
    x, original = to_model_tensor(ims, multiple=8, size=(32, 32))
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert original == [(29, 37), (10, 10)]
    with pytest.raises(InputError, match="multiples of 8"):
        to_model_tensor(ims, multiple=8, size=(30, 32))
    back = to_pil(x, original)
    assert back[0].size == (37, 29) and back[0].getpixel((18, 14))[0] > 240


def test_prompts_validated_and_broadcast():
    assert check_prompts("a cat", 3) == ["a cat"] * 3
    with pytest.raises(InputError, match=r"prompt\[0\] is empty"):
        check_prompts("  ", 1)
    with pytest.raises(InputError, match="2 prompts for 3 images"):
        check_prompts(["a", "b"], 3)
    with pytest.raises(InputError, match="must be a string"):
        check_prompts([3], 1)


def test_png_roundtrip_through_bytes():
    buf = io.BytesIO()
    Image.new("P", (8, 8), 3).save(buf, format="PNG")
    buf.seek(0)
    assert load_image(Image.open(buf)).mode == "RGB"
