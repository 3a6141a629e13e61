"""Input normalisation and A1111's four resize modes (spec §3.1–§3.2). Pillow-exact."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from retouch.modes import ResizeMode

LANCZOS = Image.Resampling.LANCZOS
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale images → 8-bit "L" by scaling (A1111 would clip them to white)."""
    if image.mode in _HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(values * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    return image


# What A1111 users send. Pillow reads more (EPS runs Ghostscript, for one): retouch opens only these.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose the image


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` the image has after :func:`fix_image` — read from its header, so that an image
    opened but not decoded can be checked."""
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block: fix_image ignores it too
        orientation = None
    return (image.height, image.width) if orientation in _SWAPS_AXES else image.size


def fix_image(image: Image.Image) -> Image.Image:
    """An uploaded image as A1111 reads it: EXIF orientation applied, palette transparency → RGBA."""
    with contextlib.suppress(Exception):  # A1111 swallows EXIF errors too (spec §3.1)
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
        image = image.convert("RGBA")
    return image


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB image with transparency composited over ``background`` (RGBA only, as A1111 §3.1)."""
    image = to_eight_bit(image)
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, background)
        canvas.paste(image, mask=image)
        image = canvas
    return image.convert("RGB")


Enlarge = Callable[[Image.Image, float], Image.Image]


def _resize(image: Image.Image, width: int, height: int, enlarge: Enlarge | None) -> Image.Image:
    """Lanczos to ``width`` × ``height``; with an upscaler, an enlargement goes through it first (greyscale
    images never do) and Lanczos fixes the size it lands on."""
    if enlarge is None or image.mode == "L":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = enlarge(image, scale)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


def resize_image(mode: int, image: Image.Image, width: int, height: int, enlarge: Enlarge | None = None
                 ) -> Image.Image:
    """A1111 ``resize_image``: 0 stretch, 1 crop (cover), 2 fill (contain + stretched edges).

    Mode 3 (latent upscale) and any other value behave as mode 2 here (spec §3.2). Modes 1 and 2
    return RGB; mode 0 keeps the input mode. ``enlarge(image, scale)`` is the upscaler (A1111's
    ``upscaler_name``; None: Lanczos only).
    """
    if mode == ResizeMode.JUST_RESIZE:
        return _resize(image, width, height, enlarge)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == ResizeMode.CROP_AND_RESIZE:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = _resize(image, src_w, src_h, enlarge)
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    src_w = width if ratio < src_ratio else image.width * height // image.height
    src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = _resize(image, src_w, src_h, enlarge)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        band = height // 2 - src_h // 2
        if band > 0:  # the top/bottom edge rows stretched (a zero-height source box), spec §3.2
            out.paste(resized.resize((width, band), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(resized.resize((width, band), box=(0, resized.height, width, resized.height)),
                      box=(0, band + src_h))
    elif ratio > src_ratio:
        band = width // 2 - src_w // 2
        if band > 0:
            out.paste(resized.resize((band, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(resized.resize((band, height), box=(resized.width, 0, resized.width, height)),
                      box=(band + src_w, 0))
    return out
