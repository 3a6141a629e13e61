"""Stage 2 (A1111 ``init()``): encode the prepared images, build the latent masks, fill masked content,
make the image conditioning — and the last network stage, decoding latents back to images.

Masks here: the core's polarity, ``repaint`` 1 = repaint; A1111's ``mask`` (1 = keep) is kept beside
it only so that the blend is bit-identical to A1111's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from retouch.control import JobHooks
from retouch.imageops import masking
from retouch.imageops.resize import Enlarge
from retouch.models.model import Model
from retouch.modes import InpaintFill, ResizeMode
from retouch.options import Options
from retouch.params import Img2ImgJob, Job
from retouch.pipeline.inputs import PreparedInputs, prepare_inputs
from retouch.sampling.inpaint import InpaintBlend, SoftBlend
from retouch.sampling.rng import ImageRNG

LATENT_FACTOR = 8


@dataclass
class InitState:
    """What ``init()`` leaves for sampling (A1111's names in comments)."""

    prepared: PreparedInputs
    pixels: torch.Tensor | None  # (B, 3, H, W) in [0, 1]; txt2img: None
    init_latent: torch.Tensor  # init_latent (after latent noise / nothing fill)
    blend: InpaintBlend | None  # mask / nmask
    image_conditioning: torch.Tensor  # image_conditioning
    batch_size: int  # images per batch (several init images set it to their count)
    overlay_images: list[Image.Image] | None
    color_corrections: list | None
    extra_params: dict = field(default_factory=dict)


def initialize(job: Img2ImgJob, model: Model, options: Options, hooks: JobHooks,
               enlarge: Enlarge | None = None) -> InitState:
    """Prepare the inputs, encode them, and build masks and image conditioning (A1111 ``init()``); ``enlarge``: the
    ``upscaler_for_img2img``."""
    params = job.params
    prepared = prepare_inputs(params, options, hooks.check, enlarge)
    extra = {"Denoising strength": params.denoising_strength, **prepared.extra_params}
    with torch.inference_mode():
        pixels, batch_size = batch_pixels(prepared.images, params.batch_size)
        # one init image repeated: encoded once (each image is encoded on its own anyway, so this is exact)
        unique = pixels[:1] if len(prepared.images) == 1 else pixels
        init_latent = _repeat(encode_images(model, unique, params.resize_mode, params.width, params.height, hooks),
                              batch_size)
        blend = None
        if prepared.image_mask is not None and prepared.latent_mask is not None:
            keep, repaint = make_latent_masks(prepared.latent_mask, init_latent, params.rounds_mask)
            first_noise = lambda: make_rng(job, model, options, job.seeds[: init_latent.shape[0]], None).next()  # noqa: E731
            init_latent, fill_extra = apply_masked_content(init_latent, keep, repaint, params.inpainting_fill,
                                                           first_noise)
            extra.update(fill_extra)
            blend = _blend(job, init_latent, repaint, keep)
        image_cond = _repeat(model.image_conditioning(unique * 2 - 1, init_latent[:len(unique)], prepared.image_mask,
                                                      params.rounds_mask, options.inpainting_mask_weight, hooks),
                             batch_size)
    single = len(prepared.images) == 1
    overlays = prepared.overlay_images
    corrections = prepared.color_corrections
    if single:
        overlays = overlays * batch_size if overlays is not None else None
        corrections = corrections * batch_size if corrections is not None else None
    return InitState(prepared, pixels, init_latent, blend, image_cond, batch_size, overlays, corrections, extra)


def _blend(job: Img2ImgJob, original: torch.Tensor, repaint: torch.Tensor, keep: torch.Tensor) -> InpaintBlend:
    soft = job.params.soft_inpainting
    if soft is None:
        return InpaintBlend(original, repaint, keep)
    return SoftBlend(original, repaint, keep, soft.schedule_bias, soft.preservation_strength,
                     soft.transition_contrast_boost)


def _repeat(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(1, …)`` → ``(batch_size, …)`` (a copy: later stages write into rows); ``(B, …)`` unchanged."""
    return tensor.repeat(batch_size, *([1] * (tensor.ndim - 1))) if tensor.shape[0] == 1 else tensor


def make_rng(job: Job, model: Model, options: Options, seeds: Sequence[int],
             subseeds: Sequence[int] | None, shape: tuple[int, ...] | None = None) -> ImageRNG:
    """Per-image noise for one batch (of latents ``shape``: default the job's size); without ``subseeds`` the
    plain seeds only (no variation, seed resize or ENSD — as A1111 draws the latent-noise fill)."""
    params = job.params
    shape = shape or (model.latent_channels, params.height // LATENT_FACTOR, params.width // LATENT_FACTOR)
    variation = subseeds is not None
    return ImageRNG(shape, seeds, subseeds=subseeds,
                    subseed_strength=params.subseed_strength if variation else 0.0,
                    seed_resize_from_h=params.seed_resize_from_h if variation else 0,
                    seed_resize_from_w=params.seed_resize_from_w if variation else 0,
                    source=options.randn_source, device=model.device,
                    eta_noise_seed_delta=options.eta_noise_seed_delta if variation else 0)


def batch_pixels(images: list[Image.Image], batch_size: int) -> tuple[torch.Tensor, int]:
    """Images → ``(B, 3, H, W)`` float in [0, 1]; one image is repeated ``batch_size`` times, several
    images shrink the batch to their count (spec §3.14)."""
    arrays = [np.moveaxis(np.array(img).astype(np.float32) / 255.0, 2, 0) for img in images]
    if len(arrays) == 1:  # a view: the batch's rows share the one image's memory
        return torch.from_numpy(np.expand_dims(arrays[0], 0)).expand(batch_size, -1, -1, -1), batch_size
    if len(arrays) > batch_size:
        raise ValueError(f"init_images: bad number of images passed: {len(arrays)}; expecting {batch_size} or less")
    return torch.from_numpy(np.array(arrays)), len(arrays)


def encode_images(model: Model, pixels: torch.Tensor, resize_mode: int, width: int, height: int,
                  hooks: JobHooks | None = None) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → init latents; latent-upscale mode resizes the latent bilinearly."""
    init_latent = model.encode_first_stage(pixels * 2 - 1, hooks)
    if resize_mode == ResizeMode.LATENT_UPSCALE:
        init_latent = torch.nn.functional.interpolate(
            init_latent, size=(height // LATENT_FACTOR, width // LATENT_FACTOR), mode="bilinear")
    return init_latent


def make_latent_masks(mask: Image.Image, init_latent: torch.Tensor, round_mask: bool,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, repaint)`` masks ``(C, h, w)``: the facade's ``mask`` (1 = keep) and ``nmask`` (1 = repaint)."""
    latmask = masking.latent_mask(mask, init_latent.shape[3], init_latent.shape[2], round_mask)
    latmask = np.tile(latmask[None], (init_latent.shape[1], 1, 1))
    keep = torch.asarray(1.0 - latmask).to(init_latent)
    repaint = torch.asarray(latmask).to(init_latent)
    return keep, repaint


def apply_masked_content(init_latent: torch.Tensor, keep: torch.Tensor, repaint: torch.Tensor, fill: int,
                         first_noise: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Latent noise / latent nothing (spec §3.6). ``first_noise()`` gives the first batch's initial noise."""
    if fill == InpaintFill.LATENT_NOISE:
        return init_latent * keep + first_noise() * repaint, {"Masked content": "latent noise"}
    if fill == InpaintFill.LATENT_NOTHING:
        return init_latent * keep, {"Masked content": "latent nothing"}
    return init_latent, {}


def decode_to_unit(model: Model, latents: torch.Tensor, hooks: JobHooks | None = None) -> torch.Tensor:
    """Latents → pixels ``(B, 3, H, W)`` in [0, 1] (``clamp((x+1)/2)``)."""
    with torch.inference_mode():
        decoded = model.decode_first_stage(latents, hooks)
    return torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)


def decode_latents(model: Model, latents: torch.Tensor, hooks: JobHooks | None = None) -> list[Image.Image]:
    """Latents → RGB images, ``floor(255·clamp((x+1)/2, 0, 1))`` (spec §3.13)."""
    pixels = decode_to_unit(model, latents, hooks)
    out = []
    for sample in pixels:
        array = (255.0 * np.moveaxis(sample.cpu().numpy(), 0, 2)).astype(np.uint8)
        out.append(Image.fromarray(array))
    return out
