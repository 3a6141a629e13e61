"""img2img and inpainting: :class:`Img2ImgParams` (A1111's ``StableDiffusionProcessingImg2Img`` fields)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from retouch.imageops.resize import oriented_size
from retouch.modes import InpaintFill, ResizeMode
from retouch.params.checks import (
    MAX_SIDE,
    check_bool,
    check_choice,
    check_images,
    check_int,
    check_number,
)
from retouch.params.generation import GenerationParams, Job, field_spec
from retouch.soft_inpainting import SoftInpainting


@dataclass
class Img2ImgParams(GenerationParams):
    """An img2img / inpainting job: A1111's ``StableDiffusionProcessingImg2Img`` fields and class defaults."""

    denoising_strength: float = field_spec(0.75, "how much of the image to repaint: 0 keeps it, 1 repaints it all")
    init_images: list[Image.Image] = field_spec(help="source images", factory=list, cli=False)
    resize_mode: int = field_spec(0, "0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale")
    image_cfg_scale: float | None = field_spec(None, "image guidance for instruct-pix2pix models")
    image_mask: Image.Image | None = field_spec(None, "inpainting mask (white = repaint)", cli=False)
    mask_blur_x: int = field_spec(4, "horizontal mask blur (Gaussian sigma, px)")
    mask_blur_y: int = field_spec(4, "vertical mask blur (Gaussian sigma, px)")
    mask_round: bool = field_spec(True, "binarise the mask")
    inpainting_fill: int = field_spec(0, "masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: bool = field_spec(True, "inpaint only the masked area at full resolution")
    inpaint_full_res_padding: int = field_spec(0, "padding around the masked area (px)")
    inpainting_mask_invert: int = field_spec(0, "1 = repaint what is NOT masked")
    initial_noise_multiplier: float | None = field_spec(None, "scale of the initial noise (default from options)")
    latent_mask: Image.Image | None = field_spec(None, "separate mask for the latent blend", cli=False)
    soft_inpainting: SoftInpainting | None = field_spec(None, "soft inpainting settings (A1111's built-in extension)",
                                                cli=False)

    @property
    def uses_soft_inpainting(self) -> bool:
        """Soft inpainting is on and there is a mask (without one the extension does nothing)."""
        return self.soft_inpainting is not None and self.image_mask is not None

    @property
    def rounds_mask(self) -> bool:
        """``mask_round`` as the job uses it: soft inpainting switches it off."""
        return self.mask_round and not self.uses_soft_inpainting

    def _check_own(self) -> None:
        for name in ("mask_round", "inpaint_full_res"):
            check_bool(name, getattr(self, name))
        check_number("initial_noise_multiplier", self.initial_noise_multiplier, lo=0.0, allow_none=True)
        check_number("image_cfg_scale", self.image_cfg_scale, allow_none=True)
        check_number("denoising_strength", self.denoising_strength, lo=0.0)
        check_images("init_images", self.init_images)
        if len(self.init_images) > self.batch_size:
            raise ValueError(f"init_images: bad number of images passed: {len(self.init_images)}; "
                             f"expecting {self.batch_size} or less")
        check_choice("resize_mode", self.resize_mode, ResizeMode)
        for name in ("mask_blur_x", "mask_blur_y", "inpaint_full_res_padding"):
            check_int(name, getattr(self, name), lo=0, hi=MAX_SIDE)
        check_choice("inpainting_fill", self.inpainting_fill, InpaintFill)
        invert = self.inpainting_mask_invert
        check_int("inpainting_mask_invert", int(invert) if isinstance(invert, bool) else invert, lo=0, hi=1)
        for name in ("image_mask", "latent_mask"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Image.Image):
                raise ValueError(f"{name} must be a PIL image or None, got {type(value).__name__}")
        if self.soft_inpainting is not None:
            if not isinstance(self.soft_inpainting, SoftInpainting):
                raise ValueError(f"soft_inpainting must be a SoftInpainting or None, got "
                                 f"{type(self.soft_inpainting).__name__}")
            self.soft_inpainting.validate()
        _check_inpaint_sizes(self)



def _check_inpaint_sizes(params: Img2ImgParams) -> None:
    """Fail before sampling where A1111 fails after it ("images do not match", spec §9.7–§9.8)."""
    if params.image_mask is None or params.inpaint_full_res:
        return
    if params.width % 8 or params.height % 8:
        raise ValueError(f"width/height: images do not match — whole-picture inpainting needs a width and height "
                         f"that are multiples of 8, got {params.width}x{params.height}")
    if params.resize_mode == 3 and any(oriented_size(img) != (params.width, params.height)
                                       for img in params.init_images):
        raise ValueError("resize_mode: images do not match — latent upscale (3) cannot inpaint an image whose size "
                         "differs from width x height; use resize mode 0-2")




Img2ImgJob = Job[Img2ImgParams]
