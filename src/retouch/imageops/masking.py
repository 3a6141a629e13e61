"""Mask preprocessing, only-masked crop regions, masked-content fill and overlays (spec §3.4–§3.8).

Mask polarity everywhere here: 255 (or 1.0) = repaint, 0 = keep — A1111's convention for its input.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from retouch.imageops.resize import Enlarge, resize_image, to_eight_bit


def create_binary_mask(mask: Image.Image, round: bool = True) -> Image.Image:  # noqa: A002 - A1111's name
    """"L" mask from any image: RGBA with some transparency → its alpha (thresholded ``> 128`` when
    ``round``); anything else → luma, grey levels kept (spec §3.4 step 1)."""
    mask = to_eight_bit(mask)
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        alpha = mask.split()[-1].convert("L")
        return alpha.point(lambda v: 255 if v > 128 else 0) if round else alpha
    return mask.convert("L")


def gaussian_blur_mask(mask: Image.Image, sigma_x: int, sigma_y: int) -> Image.Image:
    """Separable OpenCV Gaussian blur, x pass then y pass, each rounded to uint8 (spec §3.4 steps 3–4).

    Kernel length ``2·floor(2.5σ + 0.5) + 1``; border reflect-101; an axis with σ 0 is left alone.
    """
    import cv2  # imported when first needed: OpenCV adds 15 MB to every process that imports it
    if sigma_x > 0:
        size = 2 * int(2.5 * sigma_x + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (size, 1), sigma_x))
    if sigma_y > 0:
        size = 2 * int(2.5 * sigma_y + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (1, size), sigma_y))
    return mask


def get_crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x1, y1, x2, y2)`` (x2/y2 exclusive) of the non-zero pixels, padded by ``pad``
    and clamped to the image; ``None`` for an all-zero mask (A1111 ``get_crop_region_v2``).

    >>> get_crop_region(Image.new("L", (10, 10)), 2) is None
    True
    """
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    if pad:
        return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)
    return x1, y1, x2, y2


def expand_crop_region(crop: tuple[int, int, int, int], width: int, height: int, image_width: int,
                       image_height: int) -> tuple[int, int, int, int]:
    """Grow ``crop`` along one axis to the ``width:height`` aspect ratio, shifting it back inside the
    image and clamping only when it cannot fit (spec §3.5.2 step 4). Never shrinks it.

    >>> expand_crop_region((100, 100, 200, 200), 640, 480, 640, 480)
    (84, 100, 217, 200)
    """
    x1, y1, x2, y2 = crop
    ratio_crop = (x2 - x1) / (y2 - y1)
    ratio_processing = width / height
    if ratio_crop > ratio_processing:
        desired = (x2 - x1) / ratio_processing
        diff = int(desired - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 = 0
        if y2 >= image_height:
            y2 = image_height
    else:
        desired = (y2 - y1) * ratio_processing
        diff = int(desired - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 = 0
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """"fill" masked content: replace the masked area by blurred colours from around it (spec §3.6).

    Pixels where ``mask`` is 0 are unchanged; a fully masked image becomes black.
    """
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in _FILL_PASSES:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def overlay_image(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The source with alpha ``255 − mask`` (premultiplied round trip, as A1111 §3.7)."""
    masked = Image.new("RGBa", (image.width, image.height))
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return masked.convert("RGBA")


def apply_overlay(image: Image.Image, paste_to: tuple[int, int, int, int] | None,
                  overlay: Image.Image | None, enlarge: Enlarge | None = None) -> tuple[Image.Image, Image.Image]:
    """Paste the generated ``image`` back (uncrop) and composite the ``overlay`` on top (spec §3.7); ``enlarge``:
    the ``upscaler_for_img2img`` for a paste region larger than the image.

    Returns ``(result, the uncropped generated image before compositing)``.
    """
    if overlay is None:
        return image, image.copy()
    if paste_to is not None:
        x, y, w, h = paste_to
        base = Image.new("RGBA", (overlay.width, overlay.height))
        base.paste(resize_image(1, image, w, h, enlarge), (x, y))
        image = base
    image = image.convert("RGBA")
    original = image.copy()
    image.alpha_composite(overlay)
    return image.convert("RGB"), original


def latent_mask(mask: Image.Image, latent_width: int, latent_height: int, round: bool) -> np.ndarray:  # noqa: A002
    """``(h, w)`` float32 repaint mask at latent size: Pillow's default (bicubic) resize, /255, and
    ``np.around`` when ``round`` (spec §3.8)."""
    small = mask.convert("RGB").resize((latent_width, latent_height))
    values = np.moveaxis(np.array(small, dtype=np.float32), 2, 0)[0] / 255
    return np.around(values) if round else values
