"""Input normalisation and resize modes: spec §8 items 1–8 (EXACT, Pillow 12.3 = A1111's Pillow 9.5)."""

import numpy as np
import pytest
from PIL import Image

from retouch.imageops.resize import flatten, resize_image

LANCZOS = Image.Resampling.LANCZOS


def gradient(w, h, mode="RGB"):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(data)
    return img.convert(mode)


def test_mode0_is_a_lanczos_stretch_keeping_the_mode():  # 1, 5
    src = gradient(100, 50)
    assert np.array_equal(np.array(resize_image(0, src, 64, 64)), np.array(src.resize((64, 64), LANCZOS)))
    assert resize_image(0, src.convert("L"), 64, 64).mode == "L"


def test_mode1_crop_and_resize():  # 2, 5, 6
    src = gradient(100, 50)
    out = resize_image(1, src, 64, 64)
    big = np.array(src.resize((128, 64), LANCZOS))
    assert np.array_equal(np.array(out), big[:, 32:96])
    assert resize_image(1, src.convert("L"), 64, 64).mode == "RGB"


def test_mode2_resize_and_fill():  # 3, 6
    src = gradient(100, 50)
    out = np.array(resize_image(2, src, 64, 64)).astype(int)
    small = np.array(src.resize((64, 32), LANCZOS)).astype(int)
    assert np.array_equal(out[16:48], small)
    assert (out[0:16] == out[0]).all() and (out[48:64] == out[48]).all()
    # on a smooth image the stretched edge line is close to the first/last row (a Lanczos mix of rows)
    y, x = np.mgrid[0:50, 0:100]
    smooth = Image.fromarray(np.stack([x * 2, y * 4, x + y], -1).astype(np.uint8))
    out = np.array(resize_image(2, smooth, 64, 64)).astype(int)
    small = np.array(smooth.resize((64, 32), LANCZOS)).astype(int)
    assert np.abs(out[0] - small[0]).max() <= 3 and np.abs(out[63] - small[-1]).max() <= 3


def test_mode2_odd_band_leaves_a_black_last_row():  # 4
    out = np.array(resize_image(2, gradient(100, 50), 64, 65))
    assert (out[-1] == 0).all() and not (out[-2] == 0).all()


def test_mode2_taller_source_fills_columns():
    out = np.array(resize_image(2, gradient(50, 100), 64, 64)).astype(int)
    assert (out[:, 0:16] == out[:, :1]).all()


def test_mode3_resizes_like_mode2_for_masks():
    src = gradient(100, 50)
    assert np.array_equal(np.array(resize_image(3, src, 64, 64)), np.array(resize_image(2, src, 64, 64)))


@pytest.mark.parametrize(("rgba", "expected"), [((200, 100, 0, 128), (227, 177, 127)), ((10, 20, 30, 0), (255, 255, 255)),
                                                 ((10, 20, 30, 255), (10, 20, 30))])
def test_flatten_over_white(rgba, expected):  # 8
    img = Image.new("RGBA", (2, 2), rgba)
    assert flatten(img).getpixel((0, 0)) == expected


def test_flatten_custom_background_and_other_modes():
    assert flatten(Image.new("RGBA", (1, 1), (0, 0, 0, 0)), "#ff0000").getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (1, 1), (100, 0))
    assert flatten(la).getpixel((0, 0)) == (100, 100, 100)  # no compositing for LA (A1111)
    p = Image.new("P", (1, 1), 3)
    assert flatten(p).mode == "RGB"


def test_sixteen_bit_images_are_scaled_not_clipped():
    img = Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16))
    assert flatten(img).getpixel((0, 0)) == (128, 128, 128)
