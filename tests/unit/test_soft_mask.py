"""Soft inpainting: settings, the latent blend, the overlay-mask filters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retouch.imageops.soft_mask import gaussian_kernel, smootherstep, weighted_histogram_filter
from retouch.sampling.inpaint import SoftBlend, latent_blend
from retouch.soft_inpainting import SoftInpainting, parse_alwayson_scripts


def slow_filter(img, kernel, lo_pct, hi_pct, min_width=1.0):
    """The weighted percentile window, one pixel at a time, neighbours cut at the border."""
    h, w = img.shape
    r = kernel.shape[0] // 2
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            items = []
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        items.append((float(img[y + dy, x + dx]), float(kernel[dy + r, dx + r])))
            items.sort(key=lambda item: item[0])
            total = sum(weight for _, weight in items)
            a, b = total * lo_pct, total * hi_pct
            if b - a < min_width:
                c = (a + b) / 2
                a, b = c - min_width / 2, c + min_width / 2
                if b > total:
                    a, b = total - min_width, total
                if a < 0:
                    a, b = 0.0, min_width
            acc = acc_w = start = 0.0
            for value, weight in items:
                overlap = min(b, start + weight) - max(a, start)
                if overlap > 0:
                    acc += value * overlap
                    acc_w += overlap
                start += weight
            out[y, x] = acc / acc_w if acc_w else 0.0
    return out


@pytest.mark.parametrize("lo, hi", [(0.9, 1.0), (0.25, 0.75), (0.0, 0.01)])
def test_weighted_histogram_filter_matches_the_pixel_loop(lo, hi):
    rng = np.random.default_rng(1)
    img = rng.random((9, 11)).astype(np.float32) * 3
    img[2, 3] = img[2, 4]  # ties keep their order
    kernel = gaussian_kernel()
    ours = weighted_histogram_filter(img, kernel, lo, hi)
    assert ours.dtype == np.float32
    assert np.allclose(ours, slow_filter(img, kernel, lo, hi), rtol=0, atol=1e-6)


def test_kernel_is_one_at_the_centre_and_zero_beyond_its_radius():
    kernel = gaussian_kernel(1.5, 2)
    assert kernel.shape == (5, 5) and kernel[2, 2] == 1.0
    zero = math.exp(-9 / 2.25)
    assert kernel[0, 2] == pytest.approx((math.exp(-4 / 2.25) - zero) / (1 - zero))
    assert np.all(kernel > 0)


def test_smootherstep_fixed_points():
    x = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    assert np.allclose(smootherstep(x), [0, 0.5, 1])


def test_latent_blend_ends_and_magnitude_interpolation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g) * 3
    assert torch.allclose(latent_blend(a.clone(), b, torch.zeros(4, 3, 3), 4), a, atol=1e-4)
    assert torch.allclose(latent_blend(a.clone(), b, torch.ones(4, 3, 3), 4), b, atol=1e-4)
    half = latent_blend(a.clone(), b, torch.full((4, 3, 3), 0.5), 4)
    expected = ((a.norm(dim=1).double() ** 4 + b.norm(dim=1).double() ** 4) / 2) ** 0.25
    assert torch.allclose(half.norm(dim=1).double(), expected, rtol=1e-4)


def test_soft_blend_keeps_more_of_the_original_at_high_sigma_and_skips_the_final_blend():
    original, latents = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    repaint = torch.full((4, 2, 2), 0.5)
    blend = SoftBlend(original, repaint, 1 - repaint, 1.0, 0.5, 4.0)
    early = blend.step(latents.clone(), torch.tensor([10.0]))
    late = blend.step(latents.clone(), torch.tensor([0.1]))
    assert early.mean() < late.mean()  # 0.5 ** (σ · 0.5): the original weighs more while σ is large
    assert torch.equal(blend.final(latents), latents)


def test_settings_from_api_args_with_defaults_and_validation():
    assert parse_alwayson_scripts({"soft inpainting": {"args": [False]}}) is None
    settings = parse_alwayson_scripts({"Soft Inpainting": {"args": [True, 1.5, 2]}})
    assert settings == SoftInpainting(schedule_bias=1.5, preservation_strength=2)
    assert settings.infotext_params()["Soft inpainting transition contrast boost"] == 4  # default, as sent
    with pytest.raises(ValueError, match=r"schedule_bias must be in \[0, 8\], got 9"):
        parse_alwayson_scripts({"soft inpainting": {"args": [True, 9]}})
    with pytest.raises(ValueError, match="transition_contrast_boost must be in"):
        parse_alwayson_scripts({"soft inpainting": {"args": [True, 1, 0.5, 0]}})
    with pytest.raises(ValueError, match="enabled"):
        parse_alwayson_scripts({"soft inpainting": {"args": ["yes"]}})
    with pytest.raises(ValueError, match="at most 7"):
        parse_alwayson_scripts({"soft inpainting": {"args": [True] + [1] * 7}})
    with pytest.raises(ValueError, match="'ControlNet' is not supported"):
        parse_alwayson_scripts({"ControlNet": {"args": []}})


def test_settings_round_trip_through_the_infotext():
    settings = SoftInpainting(1.5, 1.5, 6, 0.3, 2, 3)
    text = {k: str(v) for k, v in settings.infotext_params().items()}
    assert text["Soft inpainting enabled"] == "True" and text["Soft inpainting schedule bias"] == "1.5"
    assert SoftInpainting.from_infotext(text) == settings
    assert SoftInpainting.from_infotext({"Soft inpainting enabled": "False"}) is None
