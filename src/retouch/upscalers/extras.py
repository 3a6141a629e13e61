"""A1111's Extras tab upscaling (``scripts/postprocessing_upscale.py``): scale by a factor or to a size (cropped
to it), with a second upscaler blended in, and the ``postprocessing`` infotext it writes."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from retouch.options import Options
from retouch.upscalers.catalogue import UpscalerInfo
from retouch.upscalers.run import Upscalers

MAX_FACTOR = 8.0


@dataclass(frozen=True)
class ExtrasUpscale:
    """What A1111's extras endpoints take (``resize_mode``: 0 scale by ``upscaling_resize``, 1 scale to
    ``upscaling_resize_w`` × ``upscaling_resize_h``)."""

    resize_mode: int = 0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0.0
    max_side_length: int = 0

    def check(self, upscalers: Upscalers) -> tuple[UpscalerInfo | None, UpscalerInfo | None]:
        """The two upscalers (None: none); ``ValueError`` naming the field for anything bad."""
        if self.resize_mode not in (0, 1):
            raise ValueError(f"resize_mode must be 0 (scale by) or 1 (scale to), got {self.resize_mode!r}")
        if self.resize_mode == 0 and not (isinstance(self.upscaling_resize, int | float)
                                          and 0 < self.upscaling_resize <= MAX_FACTOR):
            raise ValueError(f"upscaling_resize must be above 0 and at most {MAX_FACTOR}, got {self.upscaling_resize!r}")
        if self.resize_mode == 1:
            for name in ("upscaling_resize_w", "upscaling_resize_h"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16384:
                    raise ValueError(f"{name} must be an integer between 1 and 16384, got {value!r}")
        if not isinstance(self.extras_upscaler_2_visibility, int | float) \
                or not 0 <= self.extras_upscaler_2_visibility <= 1:
            raise ValueError("extras_upscaler_2_visibility must be between 0 and 1, got "
                             f"{self.extras_upscaler_2_visibility!r}")
        first = None if self.upscaler_1 in (None, "None") else upscalers.find(self.upscaler_1, "upscaler_1")
        second = None if self.upscaler_2 in (None, "None") else upscalers.find(self.upscaler_2, "upscaler_2")
        return first, second

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the result for a ``width`` × ``height`` picture (to check it against a limit first)."""
        if self.resize_mode == 1:
            if self.upscaling_crop:
                return self.upscaling_resize_w, self.upscaling_resize_h
            scale = max(self.upscaling_resize_w / width, self.upscaling_resize_h / height)
        else:
            scale = self.upscaling_resize
        return int((width * scale) // 8 * 8), int((height * scale) // 8 * 8)


def upscale_extras(image: Image.Image, settings: ExtrasUpscale, upscalers: Upscalers, options: Options | None = None,
                   check: Callable[[], None] = lambda: None) -> tuple[Image.Image, dict[str, Any]]:
    """A1111's extras upscale of ``image``: the result and the ``postprocessing`` info (in A1111's key order)."""
    first, second = settings.check(upscalers)
    info: dict[str, Any] = {}
    if first is None:
        return image, info
    result = _upscale(image, info, first, settings, upscalers, options, check)
    info["Postprocess upscaler"] = first.name
    if second is not None and settings.extras_upscaler_2_visibility > 0:
        other = _upscale(image, info, second, settings, upscalers, options, check)
        if other.mode != result.mode:
            other = other.convert(result.mode)
        result = Image.blend(result, other, settings.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = second.name
    return result, info


def _upscale(image: Image.Image, info: dict[str, Any], upscaler: UpscalerInfo, settings: ExtrasUpscale,
             upscalers: Upscalers, options: Options | None, check: Callable[[], None]) -> Image.Image:
    mode, crop = settings.resize_mode, settings.upscaling_crop
    width, height = settings.upscaling_resize_w, settings.upscaling_resize_h
    if mode == 1:
        scale = max(width / image.width, height / image.height)
        info["Postprocess upscale to"] = f"{width}x{height}"
    else:
        scale = settings.upscaling_resize
        info["Postprocess upscale by"] = scale
        limit = settings.max_side_length
        if limit and max(image.size) * scale > limit:
            mode, crop = 1, False
            width, height = _limit_size(image.width * scale, image.height * scale, limit)
            scale = max(width / image.width, height / image.height)
            info["Max side length"] = limit
    result = upscalers.upscale(image, scale, upscaler, options, check)
    if mode == 1 and crop:
        cropped = Image.new("RGB", (width, height))
        cropped.paste(result, box=(width // 2 - result.width // 2, height // 2 - result.height // 2))
        result = cropped
        info["Postprocess crop to"] = f"{result.width}x{result.height}"
    return result


def _limit_size(width: float, height: float, limit: int) -> tuple[int, int]:
    """A1111's ``limit_size_by_one_dimention``: the longer side to ``limit``, the other in proportion."""
    if height > width and height > limit:
        return int(math.ceil(width * limit / height)), limit
    if width > limit:
        return limit, int(math.ceil(height * limit / width))
    return int(width), int(height)


def infotext(info: dict[str, Any]) -> str:
    """The ``postprocessing`` text: ``Key: value`` pairs, values quoted as A1111 quotes them."""
    return ", ".join(key if key == value else f"{key}: {_quote(value)}" for key, value in info.items()
                     if value is not None)


def html_info(text: str) -> str:
    """A1111's ``plaintext_to_html``."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)
