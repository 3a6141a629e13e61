"""Mask preprocessing, crop regions, fill, overlay, latent masks: spec §8 items 9–33 (EXACT)."""

import numpy as np
import pytest
from PIL import Image

from retouch.imageops import masking
from retouch.imageops.color import apply_color_correction, color_correction_target, match_histograms


def rgba(alpha_values, rgb=(0, 0, 0)):
    a = np.array(alpha_values, dtype=np.uint8)
    data = np.zeros(a.shape + (4,), dtype=np.uint8)
    data[..., :3] = rgb
    data[..., 3] = a
    return Image.fromarray(data, "RGBA")


def test_rgba_alpha_is_thresholded_above_128():  # 9
    mask = masking.create_binary_mask(rgba([[0, 128, 129, 255]], rgb=(255, 255, 255)))
    assert np.array(mask).tolist() == [[0, 0, 255, 255]]
    soft = masking.create_binary_mask(rgba([[0, 128, 129, 255]]), round=False)  # 19
    assert np.array(soft).tolist() == [[0, 128, 129, 255]]


def test_opaque_rgba_rgb_and_l_masks_use_luma_without_threshold():  # 10
    opaque = Image.fromarray(np.array([[[255, 0, 0, 255], [100, 100, 100, 255]]], dtype=np.uint8), "RGBA")
    assert np.array(masking.create_binary_mask(opaque)).tolist() == [[76, 100]]
    rgb = Image.fromarray(np.array([[[0, 255, 0], [0, 0, 255]]], dtype=np.uint8))
    assert np.array(masking.create_binary_mask(rgb)).tolist() == [[150, 29]]


def test_fully_transparent_rgba_is_an_empty_mask():  # 11
    assert not np.array(masking.create_binary_mask(rgba([[0, 0], [0, 0]], rgb=(255, 255, 255)))).any()


def test_mask_modes_p_1_and_16_bit():
    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    assert np.array(masking.create_binary_mask(p)).tolist() == [[255, 255], [255, 255]]
    assert np.array(masking.create_binary_mask(Image.new("1", (2, 2), 1))).max() == 255
    sixteen = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert np.array(masking.create_binary_mask(sixteen)).min() == 255


@pytest.mark.parametrize(("sigma", "size"), [(1, 7), (2, 11), (3, 17), (4, 21), (8, 41), (16, 81)])
def test_blur_kernel_size(sigma, size):  # 13
    mask = Image.new("L", (201, 1), 0)
    mask.putpixel((100, 0), 255)
    blurred = np.array(masking.gaussian_blur_mask(mask, sigma, 0))[0]
    assert np.count_nonzero(blurred) <= size and blurred[100 - size // 2 - 1] == 0


def test_blur_is_separable_x_then_y_each_rounded():  # 13
    import cv2

    rng = np.random.default_rng(0)
    mask = Image.fromarray((rng.random((40, 50)) > 0.7).astype(np.uint8) * 255)
    x_then_y = cv2.GaussianBlur(cv2.GaussianBlur(np.array(mask), (21, 1), 4), (1, 11), 2)
    assert np.array_equal(np.array(masking.gaussian_blur_mask(mask, 4, 2)), x_then_y)
    assert np.array_equal(np.array(masking.gaussian_blur_mask(mask, 0, 0)), np.array(mask))  # 14


@pytest.mark.parametrize(("image", "bbox", "pad", "size", "padded", "expanded"), [
    ((512, 512), (100, 200, 150, 220), 32, (512, 512), (68, 168, 182, 252), (68, 153, 182, 267)),
    ((512, 512), (10, 490, 300, 512), 0, (512, 512), (10, 490, 300, 512), (10, 222, 300, 512)),
    ((512, 256), (0, 0, 512, 10), 0, (512, 512), (0, 0, 512, 10), (0, 0, 512, 256)),
    ((768, 512), (300, 100, 310, 400), 16, (512, 768), (284, 84, 326, 416), (195, 84, 416, 416)),
    ((1024, 1024), (0, 0, 1, 1), 0, (768, 512), (0, 0, 1, 1), (0, 0, 1, 1)),
    ((1000, 600), (990, 590, 1000, 600), 8, (512, 512), (982, 582, 1000, 600), (982, 582, 1000, 600)),
    ((640, 480), (100, 100, 200, 200), 0, (640, 480), (100, 100, 200, 200), (84, 100, 217, 200)),
])
def test_crop_region_vectors(image, bbox, pad, size, padded, expanded):  # 20, 21
    mask = Image.new("L", image, 0)
    mask.paste(255, bbox)
    assert masking.get_crop_region(mask, pad) == padded
    assert masking.expand_crop_region(padded, size[0], size[1], image[0], image[1]) == expanded


def test_empty_mask_has_no_crop_region():
    assert masking.get_crop_region(Image.new("L", (8, 8), 0), 4) is None


def source(w=64, h=64):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_fill_keeps_unmasked_pixels_and_blacks_out_a_full_mask():  # 33
    img = source()
    mask = Image.new("L", img.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    filled = np.array(masking.fill(img, mask))
    keep = np.array(mask) == 0
    assert np.array_equal(filled[keep], np.array(img)[keep])
    assert not np.array_equal(filled[~keep], np.array(img)[~keep])
    assert not np.array(masking.fill(img, Image.new("L", img.size, 255))).any()
    assert np.array_equal(np.array(masking.fill(img, Image.new("L", img.size, 0))), np.array(img))


def test_fill_half_red_half_blue_hole():
    data = np.zeros((64, 64, 3), dtype=np.uint8)
    data[:, :32, 0] = 255
    data[:, 32:, 2] = 255
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    filled = np.array(masking.fill(Image.fromarray(data), mask)).astype(int)
    assert filled[32, 17, 0] > 200 and filled[32, 17, 2] < 60  # red side stays red
    assert abs(int(filled[32, 31, 0]) - int(filled[32, 32, 2])) < 40  # a blend at the seam


def test_overlay_and_paste_back():  # 27, 29, 30, 31
    src, gen = source(), source().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mask = Image.new("L", src.size, 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.paste(100, (32, 0, 40, 64))
    overlay = masking.overlay_image(src, mask)
    out, raw = masking.apply_overlay(gen, None, overlay)
    out, src_a, gen_a = (np.array(x).astype(int) for x in (out, src, gen))
    assert np.array_equal(out[:, 40:], src_a[:, 40:])  # mask 0 → source
    assert np.array_equal(out[:, :32], gen_a[:, :32])  # mask 255 → generated
    alpha = (255 - 100) / 255
    assert np.abs(out[:, 32:40] - (src_a[:, 32:40] * alpha + gen_a[:, 32:40] * (1 - alpha))).max() <= 2  # 28
    assert np.array_equal(np.array(raw.convert("RGB")), gen_a)


def test_paste_back_uncrops_into_the_full_image():  # 26
    src, gen = source(128, 96), source(64, 64)
    mask = Image.new("L", src.size, 0)
    mask.paste(255, (40, 30, 60, 50))
    overlay = masking.overlay_image(src, mask)
    out, _ = masking.apply_overlay(gen, (32, 24, 40, 40), overlay)
    out = np.array(out)
    assert out.shape == (96, 128, 3)
    outside = np.ones((96, 128), bool)
    outside[24:64, 32:72] = False
    assert np.array_equal(out[outside], np.array(src)[outside])


def test_latent_mask_examples():  # 17, 19
    def cells(x0, x1, rnd=True):
        mask = Image.new("L", (64, 8), 0)
        mask.paste(255, (x0, 0, x1, 8))
        return masking.latent_mask(mask, 8, 1, rnd)[0]

    assert cells(20, 44).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert cells(8, 16).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert cells(0, 12).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    soft = cells(0, 12, rnd=False)
    assert soft[0] == 1.0 and abs(soft[1] - 0.506) < 0.01


def test_histogram_matching_to_itself_is_identity():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(match_histograms(a, a), a)


def test_color_correction_keeps_luma_and_moves_colour():  # 65
    rng = np.random.default_rng(0)
    src = Image.fromarray(np.clip(rng.normal([180, 60, 60], 20, (32, 32, 3)), 0, 255).astype(np.uint8))
    gen = Image.fromarray(np.clip(rng.normal([60, 60, 140], 20, (32, 32, 3)), 0, 255).astype(np.uint8))
    out = np.array(apply_color_correction(color_correction_target(src), gen)).astype(float)
    luma = lambda a: (a * [0.299, 0.587, 0.114]).sum(-1)  # noqa: E731
    assert abs(luma(out).mean() - luma(np.array(gen).astype(float)).mean()) < 3
    assert out[..., 0].mean() > np.array(gen)[..., 0].mean() + 20  # redder, like the source
    same = np.array(apply_color_correction(color_correction_target(src), src)).astype(int)
    assert np.abs(same - np.array(src).astype(int)).mean() < 1.5
