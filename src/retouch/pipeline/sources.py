"""Where a job's first latents come from: its **image source**. The rest of the pipeline (conditioning, noise,
the denoiser stack, decoding, finishing, infotext) is the same for every source.

* :class:`InitImages` — img2img and inpainting: prepared, encoded init images (with masks and image conditioning),
  noised to the strength's level.
* :class:`Noise` — txt2img: nothing to encode; the sampler walks the whole schedule from pure noise.

The hires fix's second pass starts from the first pass's latents, upscaled (:mod:`retouch.pipeline.hires`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from retouch.control import JobHooks
from retouch.imageops.resize import Enlarge
from retouch.models.model import Model, UNetInput
from retouch.options import Options
from retouch.params import Img2ImgParams, Job, Txt2ImgParams
from retouch.pipeline.inputs import PreparedInputs
from retouch.pipeline.latents import LATENT_FACTOR, InitState, initialize


class ImageSource(Protocol):
    @property
    def denoising_strength(self) -> float | None:
        """How far the sampler walks: a strength in [0, 1] (the schedule's tail), or None for all of it."""
        ...

    def initialize(self, job: Job, model: Model, options: Options, hooks: JobHooks,
                   enlarge: Enlarge | None = None) -> InitState:
        """The first latents, masks and image conditioning of the job (A1111 ``init()``); ``enlarge``: the
        ``upscaler_for_img2img`` for pictures it enlarges."""
        ...


@dataclass(frozen=True)
class InitImages:
    """img2img: the job's init images (and mask), encoded."""

    params: Img2ImgParams

    @property
    def denoising_strength(self) -> float | None:
        return self.params.denoising_strength

    def initialize(self, job: Job, model: Model, options: Options, hooks: JobHooks,
                   enlarge: Enlarge | None = None) -> InitState:
        return initialize(job, model, options, hooks, enlarge)


@dataclass(frozen=True)
class Noise:
    """txt2img: zero "init latents" (the sampler scales its noise to the schedule's first level) and A1111's
    ``txt2img_image_conditioning``."""

    params: Txt2ImgParams

    @property
    def denoising_strength(self) -> float | None:
        return None

    def initialize(self, job: Job, model: Model, options: Options, hooks: JobHooks,
                   enlarge: Enlarge | None = None) -> InitState:
        params = self.params
        if model.unet_input is UNetInput.PIX2PIX:
            raise ValueError(f"sd_model_checkpoint: {model.name} is an InstructPix2Pix model, which edits an image; "
                             "use img2img")
        shape = (params.batch_size, model.latent_channels, params.height // LATENT_FACTOR,
                 params.width // LATENT_FACTOR)
        latents = torch.zeros(shape, device=model.device)
        image_cond = txt2img_conditioning(model, latents, params.width, params.height, options, hooks)
        extra = {"Denoising strength": params.denoising_strength} if params.enable_hr else {}
        return InitState(PreparedInputs(images=[]), None, latents, None, image_cond, params.batch_size, None, None,
                         extra)


def txt2img_conditioning(model: Model, latents: torch.Tensor, width: int, height: int, options: Options,
                         hooks: JobHooks | None = None) -> torch.Tensor:
    """What the UNet gets besides the latent in txt2img (A1111 ``txt2img_image_conditioning``): for inpainting
    models an all-repaint mask and the latent of a mid-grey ``width``×``height`` picture; else a dummy."""
    if model.unet_input is not UNetInput.INPAINTING:
        return latents.new_zeros(latents.shape[0], 5, 1, 1)
    grey = torch.zeros(1, 3, height, width, device=latents.device)  # 0.5 in [0, 1]
    with torch.inference_mode():
        cond = model.image_conditioning(grey, latents[:1], None, True, options.inpainting_mask_weight, hooks)
    return cond.repeat(latents.shape[0], 1, 1, 1)


def image_source(job: Job) -> ImageSource:
    """The image source a job's parameters describe."""
    if isinstance(job.params, Img2ImgParams):
        return InitImages(job.params)
    if isinstance(job.params, Txt2ImgParams):
        return Noise(job.params)
    raise ValueError(f"no image source for {type(job.params).__name__}")
