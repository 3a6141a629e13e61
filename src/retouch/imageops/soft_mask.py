"""Soft inpainting's overlay mask: where the result differs little from the original latents, the original
pixels are composited back (A1111 ``soft_inpainting.apply_adaptive_masks``). Pure numpy/PIL.

Mask polarity of the result: 255 = show the generated pixels, 0 = keep the original.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from retouch.imageops.masking import create_binary_mask
from retouch.imageops.resize import resize_image

KERNEL_STDDEV = 1.5
KERNEL_RADIUS = 2


def gaussian_kernel(stddev: float = KERNEL_STDDEV, radius: int = KERNEL_RADIUS) -> np.ndarray:
    """A ``(2r+1)²`` Gaussian tapered to 0 one pixel beyond ``radius`` and 1 at the centre (float64)."""
    zero = math.exp(-((radius + 1.0) ** 2) / (stddev * stddev))
    scale = 1 / (1 - zero)
    size = 2 * radius + 1
    kernel = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            square = float(np.float64(y - radius) ** 2.0 + np.float64(x - radius) ** 2.0)
            value = (math.exp(-square / (stddev * stddev)) - zero) * scale
            kernel[y, x] = max(0.0, value)
    return kernel


def weighted_histogram_filter(img: np.ndarray, kernel: np.ndarray, percentile_min: float, percentile_max: float,
                              min_width: float = 1.0) -> np.ndarray:
    """A weighted percentile-window mean: for each pixel, its neighbours (weighted by ``kernel``, centred, cut
    at the image border) are sorted by value and stacked by weight; the mean over the stack's
    ``[percentile_min, percentile_max]`` part (at least ``min_width`` wide) is the result.

    ``percentile 0.9–1`` is a soft maximum, ``0.25–0.75`` a soft median. ``img`` is 2-D float32; the arithmetic
    (float64, neighbours summed in sorted order) is A1111's pixel loop, vectorised.
    """
    h, w = img.shape
    kh, kw = kernel.shape
    cy, cx = kh // 2, kw // 2
    padded = np.zeros((h + kh - 1, w + kw - 1), dtype=np.float64)
    inside = np.zeros_like(padded)
    padded[cy:cy + h, cx:cx + w] = img
    inside[cy:cy + h, cx:cx + w] = 1.0
    values = np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(kh) for dx in range(kw)], axis=-1)
    weights = np.stack([inside[dy:dy + h, dx:dx + w] * kernel[dy, dx] for dy in range(kh) for dx in range(kw)],
                       axis=-1)
    order = np.argsort(values, axis=-1, kind="stable")
    values = np.take_along_axis(values, order, axis=-1)
    weights = np.take_along_axis(weights, order, axis=-1)
    low = np.zeros((h, w))
    bounds = []
    for k in range(values.shape[-1]):  # running sums in the sorted order, as A1111 adds them
        high = low + weights[..., k]
        bounds.append((low, high))
        low = high
    total = low
    window_min, window_max = total * percentile_min, total * percentile_max
    narrow = window_max - window_min < min_width
    centre = (window_min + window_max) / 2
    window_min = np.where(narrow, centre - min_width / 2, window_min)
    window_max = np.where(narrow, centre + min_width / 2, window_max)
    over = narrow & (window_max > total)
    window_max = np.where(over, total, window_max)
    window_min = np.where(over, total - min_width, window_min)
    under = narrow & (window_min < 0)
    window_min = np.where(under, 0.0, window_min)
    window_max = np.where(under, min_width, window_max)
    value = np.zeros((h, w))
    value_weight = np.zeros((h, w))
    for k, (lo, hi) in enumerate(bounds):
        overlap = np.minimum(window_max, hi) - np.maximum(window_min, lo)
        overlap = np.where((window_min >= hi) | (window_max <= lo), 0.0, overlap)
        value = value + values[..., k] * overlap
        value_weight = value_weight + overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(value_weight != 0, value / value_weight, 0.0)
    return out.astype(img.dtype)


def smootherstep(x: np.ndarray) -> np.ndarray:
    return x * x * x * (x * (6 * x - 15) + 10)


def adaptive_overlay_mask(distance: np.ndarray, half_distance: np.ndarray | float, contrast: float, width: int,
                          height: int, paste_to: tuple[int, int, int, int] | None,
                          overlay_size: tuple[int, int]) -> Image.Image:
    """The overlay mask of one image from its latent distance map ``distance`` ``(h, w)`` float32 (‖sample −
    original‖ over channels) and the distance at which the original fades to half (``half_distance``).

    Smoothed (soft max, then soft median), mapped through ``1 / (1 + (d / half)^contrast)`` and smootherstep,
    upscaled to ``width × height``, blurred (radius 4) and, for only-masked inpainting, placed at ``paste_to``
    in an ``overlay_size`` canvas (RGBA, transparent black elsewhere, as A1111's ``uncrop``).
    """
    kernel = gaussian_kernel()
    smoothed = weighted_histogram_filter(distance, kernel, 0.9, 1.0)
    smoothed = weighted_histogram_filter(smoothed, kernel, 0.25, 0.75)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = smoothed / half_distance
        opacity = 1 / (1 + ratio ** contrast)
        mask = (255.0 * (1 - smootherstep(opacity))).astype(np.uint8)
    image = resize_image(2, Image.fromarray(mask), width, height)
    image = create_binary_mask(image, round=False).filter(ImageFilter.GaussianBlur(radius=4))
    if paste_to is None:
        return image
    x, y, w, h = paste_to
    canvas = Image.new("RGBA", overlay_size)
    canvas.paste(resize_image(1, image, w, h), (x, y))
    return canvas
