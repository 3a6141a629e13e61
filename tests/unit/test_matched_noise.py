"""Outpainting mk2's matched noise: quantile mapping as scikit-image's, and the fill leaving the picture alone."""

import numpy as np

from retouch.scripts.outpainting_mk2 import match_histograms, matched_noise


def test_match_histograms_maps_quantiles_per_channel():
    rng = np.random.default_rng(1)
    source = rng.random((500, 3))
    reference = np.stack([rng.normal(0.2, 0.05, 800), rng.normal(0.7, 0.1, 800), rng.random(800) ** 3], axis=1)
    matched = match_histograms(source, reference)
    for c in range(3):
        assert np.array_equal(np.argsort(matched[:, c], kind="stable"), np.argsort(source[:, c], kind="stable"))
        assert abs(np.median(matched[:, c]) - np.median(reference[:, c])) < 0.02
        assert matched[:, c].max() <= reference[:, c].max() and matched[:, c].min() >= reference[:, c].min()


def test_matched_noise_fills_only_the_mask_deterministically():
    rng = np.random.default_rng(2)
    image = rng.random((64, 96, 3)) * 0.5 + 0.25
    mask = np.zeros_like(image)
    mask[:, 64:] = 1.0
    first = matched_noise(image.copy(), mask, 1.0, 0.05)
    assert np.array_equal(first[:, :64], image[:, :64])
    assert np.array_equal(first, matched_noise(image.copy(), mask, 1.0, 0.05))  # seeded 0, as A1111's
    filled = first[:, 64:]
    assert 0.2 < filled.mean() < 0.8 and filled.std() > 0.01
