"""How each sub-tab of the img2img tab turns what the page holds into (init image, mask), as A1111's
``img2img()`` dispatches on its mode (spec §3.3). Pure PIL/numpy: no Gradio here.

Gradio's image editor gives ``{"background", "layers", "composite"}`` (RGBA arrays or images); a painted
mask is the alpha of the layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


class Mode(IntEnum):
    IMG2IMG = 0
    SKETCH = 1
    INPAINT = 2
    INPAINT_SKETCH = 3
    INPAINT_UPLOAD = 4
    BATCH = 5


MODE_NAMES = {Mode.IMG2IMG: "img2img", Mode.SKETCH: "Sketch", Mode.INPAINT: "Inpaint",
              Mode.INPAINT_SKETCH: "Inpaint sketch", Mode.INPAINT_UPLOAD: "Inpaint upload", Mode.BATCH: "Batch"}


@dataclass(frozen=True)
class ModeInputs:
    """What the sub-tabs hold when Generate is pressed (None where nothing was given)."""

    image: Any = None  # img2img: an image
    sketch: Any = None  # Sketch: editor value
    inpaint: Any = None  # Inpaint: editor value (image + painted mask)
    inpaint_sketch: Any = None  # Inpaint sketch: editor value
    upload_image: Any = None  # Inpaint upload: the image …
    upload_mask: Any = None  # … and its mask


def to_image(value: Any) -> Image.Image | None:
    """A PIL image from whatever Gradio hands over (PIL, numpy, a file path), or None."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value.astype(np.uint8))
    if isinstance(value, str):
        with Image.open(value) as opened:
            opened.load()
            return opened.copy()
    raise ValueError(f"not an image: {type(value).__name__}")


def _editor(value: Any, what: str) -> tuple[Image.Image, list[Image.Image], Image.Image]:
    """(background, layers, composite) of an editor value; ValueError naming the tab when it holds no image."""
    if not isinstance(value, dict) or value.get("background") is None:
        raise ValueError(f"{what}: no image; upload one first")
    background = to_image(value["background"])
    assert background is not None
    layers = [img for img in (to_image(layer) for layer in value.get("layers") or []) if img is not None]
    composite = to_image(value.get("composite")) or background
    return background, layers, composite


def painted_mask(size: tuple[int, int], layers: list[Image.Image]) -> Image.Image:
    """The mask painted on the editor's layers: their alpha, thresholded at 128 (A1111's ``create_binary_mask``)."""
    alpha = np.zeros((size[1], size[0]), dtype=np.uint8)
    for layer in layers:
        if layer.size != size:
            layer = layer.resize(size, Image.Resampling.NEAREST)
        alpha = np.maximum(alpha, np.array(layer.convert("RGBA"))[..., 3])
    return Image.fromarray(np.where(alpha > 128, 255, 0).astype(np.uint8), "L")


def image_and_mask(mode: Mode, inputs: ModeInputs, mask_blur: int, mask_alpha: float
                   ) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask ``mode`` makes of ``inputs`` (spec §3.3); ValueError when the tab is empty."""
    if mode == Mode.IMG2IMG:
        image = to_image(inputs.image)
        if image is None:
            raise ValueError("img2img: no image; upload one first")
        return ImageOps.exif_transpose(image), None
    if mode == Mode.SKETCH:
        _, _, composite = _editor(inputs.sketch, "Sketch")
        return composite.convert("RGB"), None
    if mode == Mode.INPAINT:
        background, layers, _ = _editor(inputs.inpaint, "Inpaint")
        mask = painted_mask(background.size, layers)
        if not mask.getbbox():
            raise ValueError("Inpaint: no mask; paint over the part of the picture to redraw")
        return background, mask
    if mode == Mode.INPAINT_SKETCH:
        background, _, composite = _editor(inputs.inpaint_sketch, "Inpaint sketch")
        return inpaint_sketch(composite, background, mask_blur, mask_alpha)
    if mode == Mode.INPAINT_UPLOAD:
        upload, upload_mask = to_image(inputs.upload_image), to_image(inputs.upload_mask)
        if upload is None or upload_mask is None:
            raise ValueError("Inpaint upload: needs both an image and a mask")
        return ImageOps.exif_transpose(upload), upload_mask
    raise ValueError(f"mode {mode!r} does not make one image")


def inpaint_sketch(drawn: Image.Image, orig: Image.Image, mask_blur: int, mask_alpha: float
                   ) -> tuple[Image.Image, Image.Image]:
    """Inpaint sketch: the mask is where any RGB channel changed, darkened by the transparency; the image is the
    blurred strokes over the original (A1111 keeps the unblurred mask: processing blurs it again)."""
    drawn, orig = drawn.convert("RGB"), orig.convert("RGB")
    changed = np.any(np.array(drawn) != np.array(orig), axis=-1)
    if not changed.any():
        raise ValueError("Inpaint sketch: nothing drawn; draw over the part of the picture to redraw")
    mask = Image.fromarray(changed.astype(np.uint8) * 255, "L")
    mask = ImageEnhance.Brightness(mask).enhance(1 - mask_alpha / 100)
    blur = ImageFilter.GaussianBlur(mask_blur)
    return Image.composite(drawn.filter(blur), orig, mask.filter(blur)), mask


def scaled_size(image: Image.Image, scale: float) -> tuple[int, int]:
    """"Resize by": ``int(w·scale)`` × ``int(h·scale)``, not rounded to 8 (as A1111)."""
    return int(image.width * scale), int(image.height * scale)
