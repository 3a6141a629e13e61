"""Stage 1: the init images and masks, processed as A1111's ``init()`` does before encoding (spec §3.1–§3.7).

Pure PIL/numpy work (via :mod:`retouch.imageops`): flatten, resize or crop, mask preprocessing,
overlays, masked-content fill, colour-correction targets. Mask polarity: 255 = repaint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from retouch.imageops import masking
from retouch.imageops.color import color_correction_target
from retouch.imageops.resize import Enlarge, flatten, resize_image
from retouch.modes import InpaintFill, ResizeMode
from retouch.options import Options
from retouch.params import Img2ImgParams

EMPTY_MASK_COMMENT = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'


@dataclass
class PreparedInputs:
    """Processed init images and masks. Masks: 255 = repaint."""

    images: list[Image.Image]  # W×H RGB (after crop, fill) — what the VAE encodes
    image_mask: Image.Image | None = None  # W×H processed mask (None: no inpainting)
    latent_mask: Image.Image | None = None  # the mask for fill and the latent blend
    mask_for_overlay: Image.Image | None = None
    overlay_images: list[Image.Image] | None = None
    paste_to: tuple[int, int, int, int] | None = None
    inpaint_full_res: bool = False
    init_img_hash: str | None = None
    color_corrections: list | None = None  # LAB targets, one per init image
    enlarge: Enlarge | None = None  # the upscaler_for_img2img option's upscaler: pictures enlarged go through it
    extra_params: dict = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


def prepare_inputs(params: Img2ImgParams, options: Options,
                   check: Callable[[], None] | None = None, enlarge: Enlarge | None = None) -> PreparedInputs:
    """Flatten, resize/crop, mask, overlay and fill the init images (spec §3.1–§3.7); ``check()`` runs
    before each image (an interrupt check); ``enlarge``: the ``upscaler_for_img2img`` (A1111's ``resize_image``
    sends every enlarged picture through it)."""
    out = PreparedInputs(images=[], enlarge=enlarge)
    crop = None
    image_mask = params.image_mask
    if image_mask is not None:
        image_mask, crop = _prepare_mask(params, image_mask, out)
    latent_source = params.latent_mask if params.latent_mask is not None else image_mask
    out.latent_mask = latent_source
    out.image_mask = image_mask
    overlays: list[Image.Image] = []
    for img in params.init_images:
        if check is not None:
            check()
        if options.save_init_img:
            out.init_img_hash = hashlib.md5(img.tobytes()).hexdigest()
        image = flatten(img, options.img2img_background_color)
        if crop is None and params.resize_mode != ResizeMode.LATENT_UPSCALE:
            image = resize_image(params.resize_mode, image, params.width, params.height, enlarge)
        if out.mask_for_overlay is not None:
            if out.mask_for_overlay.size != image.size:
                out.mask_for_overlay = resize_image(params.resize_mode, out.mask_for_overlay, image.width, image.height)
            overlays.append(masking.overlay_image(image, out.mask_for_overlay))
        if crop is not None:
            image = resize_image(ResizeMode.RESIZE_AND_FILL, image.crop(crop), params.width, params.height, enlarge)
        if latent_source is not None and image_mask is not None and params.inpainting_fill != InpaintFill.ORIGINAL:
            image = masking.fill(image, _same_size(latent_source, image, params.resize_mode))
            if params.inpainting_fill == InpaintFill.FILL:
                out.extra_params["Masked content"] = "fill"
        if options.img2img_color_correction:
            out.color_corrections = (out.color_corrections or []) + [color_correction_target(image)]
        out.images.append(image)
    out.overlay_images = overlays if image_mask is not None else None
    return out


def _same_size(mask: Image.Image, image: Image.Image, resize_mode: int) -> Image.Image:
    if mask.size != image.size:
        raise ValueError(f"image_mask: images do not match (mask {mask.width}x{mask.height}, "
                         f"image {image.width}x{image.height}); use a width/height that are multiples of 8, "
                         "or resize mode 0-2 when inpainting")
    return mask


def _prepare_mask(params: Img2ImgParams, image_mask: Image.Image,
                  out: PreparedInputs) -> tuple[Image.Image | None, tuple[int, int, int, int] | None]:
    mask = masking.create_binary_mask(image_mask, round=params.rounds_mask)
    if params.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
        out.extra_params["Mask mode"] = "Inpaint not masked"
    mask = masking.gaussian_blur_mask(mask, params.mask_blur_x, params.mask_blur_y)
    if params.mask_blur_x > 0 or params.mask_blur_y > 0:
        out.extra_params["Mask blur"] = params.mask_blur_x if params.mask_blur_x == params.mask_blur_y else None
    crop = None
    if params.inpaint_full_res:
        out.mask_for_overlay = mask
        mask_l = mask.convert("L")
        crop = masking.get_crop_region(mask_l, params.inpaint_full_res_padding)
        if crop is None:  # spec §3.5.2 step 3: blank mask → plain img2img
            out.mask_for_overlay = None
            out.comments.append(EMPTY_MASK_COMMENT)
            return None, None
        crop = masking.expand_crop_region(crop, params.width, params.height, mask_l.width, mask_l.height)
        x1, y1, x2, y2 = crop
        image_mask = resize_image(ResizeMode.RESIZE_AND_FILL, mask_l.crop(crop), params.width, params.height)
        out.paste_to = (x1, y1, x2 - x1, y2 - y1)
        out.inpaint_full_res = True
        out.extra_params["Inpaint area"] = "Only masked"
        out.extra_params["Masked area padding"] = params.inpaint_full_res_padding
        return image_mask, crop
    image_mask = resize_image(params.resize_mode, mask, params.width, params.height)
    doubled = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
    out.mask_for_overlay = Image.fromarray(doubled)
    return image_mask, None
