"""Colour correction (A1111 ``img2img_color_correction``, spec §3.12): LAB histogram matching
to the source, then a luminosity blend that keeps the generated image's lightness."""

from __future__ import annotations

import numpy as np
from PIL import Image


def color_correction_target(image: Image.Image) -> np.ndarray:
    """The processed init image as 8-bit LAB (what outputs are matched to)."""
    import cv2  # imported when first needed: OpenCV adds 15 MB to every process that imports it

    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)


def match_histograms(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching of uint8 ``(H, W, C)`` arrays; uint8 out (values truncated),
    the arithmetic of scikit-image's ``match_histograms`` for integer images."""
    matched = np.empty(image.shape, dtype=image.dtype)
    for c in range(image.shape[-1]):
        source, template = image[..., c], reference[..., c]
        src_lookup = source.reshape(-1)
        src_counts = np.bincount(src_lookup)
        tmpl_counts = np.bincount(template.reshape(-1))
        tmpl_values = np.nonzero(tmpl_counts)[0]
        tmpl_counts = tmpl_counts[tmpl_values]
        src_quantiles = np.cumsum(src_counts) / source.size
        tmpl_quantiles = np.cumsum(tmpl_counts) / template.size
        values = np.interp(src_quantiles, tmpl_quantiles, tmpl_values)
        matched[..., c] = values[src_lookup].reshape(source.shape)
    return matched


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def luminosity_blend(background: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """W3C "luminosity": the background's colour with the foreground's luma, clipped into gamut.
    Inputs and output are float RGB in [0, 1]."""
    colours = background + (_lum(foreground) - _lum(background))[..., None]
    lum = _lum(colours)[..., None]
    low, high = colours.min(axis=-1, keepdims=True), colours.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.where(low < 0, lum + (colours - lum) * lum / (lum - low), colours)
        above = np.where(high > 1, lum + (below - lum) * (1 - lum) / (high - lum), below)
    return np.nan_to_num(above)


def apply_color_correction(target: np.ndarray, image: Image.Image) -> Image.Image:
    """Match ``image``'s LAB histograms to ``target``, then restore ``image``'s own luminosity."""
    import cv2

    original = np.asarray(image.convert("RGB"))
    matched_lab = match_histograms(cv2.cvtColor(original, cv2.COLOR_RGB2LAB), target)
    matched = cv2.cvtColor(matched_lab, cv2.COLOR_LAB2RGB).astype(np.float64) / 255.0
    blended = luminosity_blend(matched, original.astype(np.float64) / 255.0)
    return Image.fromarray(np.floor(np.clip(blended, 0, 1) * 255).astype(np.uint8))
