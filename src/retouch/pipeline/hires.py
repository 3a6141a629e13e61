"""The hires fix (A1111 ``sample_hr_pass``): each batch's first pass, upscaled, becomes the init latents of an img2img
pass at the target size — on the hires checkpoint (or the job's), with the hires sampler, schedule, steps and
prompts.

The first pass is upscaled either in latent space (the ``Latent …`` modes: ``torch.nn.functional.interpolate``) or
as pictures (decoded, enlarged by an upscaler — Lanczos, Nearest or a model — encoded again). A1111's quirks kept:
the pixel path's image conditioning is made from pictures in [0, 1]; the second pass always runs exactly its
steps (``img2img_fix_steps`` whatever the option says); its noise has the upscaled shape with the same seeds.
Where A1111 fails (an inpainting model's conditioning at the first pass's size), the target size is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from retouch.control import JobHooks
from retouch.imageops.resize import resize_image
from retouch.models.model import Model
from retouch.options import Options
from retouch.params import HiresTarget, Txt2ImgJob, Txt2ImgParams
from retouch.params.txt2img import LATENT_FACTOR, LATENT_UPSCALE_MODES, hires_target
from retouch.pipeline.inputs import PreparedInputs
from retouch.pipeline.latents import InitState, decode_to_unit
from retouch.pipeline.refiner import check_same_latents
from retouch.pipeline.resources import JobResources
from retouch.pipeline.sample import HiresPrompts, plan_job_sampling
from retouch.pipeline.sources import txt2img_conditioning
from retouch.prompt_parser import apply_styles
from retouch.sampling.plan import SamplingPlan
from retouch.sampling.registry import SamplerSpec, resolve_sampler_and_scheduler
from retouch.upscalers import Kind, Upscalers

Enlarge = Callable[[Image.Image, float], Image.Image]


@dataclass(frozen=True)
class PerImage:
    """An infotext value that differs per image: the hires prompt, written only where it is not the prompt."""

    values: list[str]
    negative: bool = False

    def __call__(self, index: int, prompt: str, negative: str) -> str | None:
        value = self.values[index] if index < len(self.values) else None
        return value if value != (negative if self.negative else prompt) else None


@dataclass(frozen=True)
class HiresFix:
    """A job's hires fix, resolved before any work."""

    target: HiresTarget
    model: Model  # the second pass's checkpoint (the job's own unless hr_checkpoint_name names another)
    sampler: SamplerSpec
    plan: SamplingPlan
    latent_mode: tuple[str, bool] | None  # (interpolation, antialias), or None: a picture upscaler
    enlarge: Enlarge | None  # the picture upscaler (None: plain Lanczos, A1111's "None")
    prompts: list[str]  # every image's hires prompt, styles applied
    negatives: list[str]
    conditioning: HiresPrompts


def plan_hires(job: Txt2ImgJob, model: Model, options: Options, resources: JobResources, first_plan: SamplingPlan,
               styles: Mapping[str, tuple[str, str]] | None, hooks: JobHooks,
               ) -> tuple[HiresFix, dict[str, Any]]:
    """The job's hires fix and the infotext keys A1111's ``init()`` adds for it (in its order); ``ValueError``
    naming the field for an unknown upscaler, checkpoint, sampler or schedule type."""
    params = job.params
    extra: dict[str, Any] = {}
    hr_model = model
    if params.hr_checkpoint is not None:
        hr_model = resources.checkpoint(params.hr_checkpoint, "hr_checkpoint_name")
        check_same_latents(hr_model, model, "hr_checkpoint_name")  # its own sampler, schedule, conditioning
        extra["Hires checkpoint"] = hr_model.short_title
    sampler, scheduler = resolve_sampler_and_scheduler(params.hr_sampler or job.sampler.name,
                                                       params.hr_scheduler_name or job.scheduler.label)
    if params.hr_sampler is not None and params.hr_sampler != job.sampler.name:
        extra["Hires sampler"] = params.hr_sampler
    prompts, negatives = hires_prompts(params, styles)
    extra["Hires prompt"] = PerImage(prompts)
    extra["Hires negative prompt"] = PerImage(negatives, negative=True)
    extra["Hires schedule type"] = None  # set by the second pass's schedule, when it differs
    mode_name = params.hr_upscaler if params.hr_upscaler is not None else "Latent"
    latent_mode = LATENT_UPSCALE_MODES.get(mode_name)
    enlarge = None if latent_mode is not None else _picture_upscaler(mode_name, resources, options, hooks)
    target = hires_target(params)
    extra.update(target.extra)
    if params.hr_second_pass_steps:
        extra["Hires steps"] = params.hr_second_pass_steps
    if params.hr_upscaler is not None:
        extra["Hires upscaler"] = params.hr_upscaler
    steps = params.hr_second_pass_steps or params.steps
    eta = params.eta if params.eta is not None else (options.eta_ddim if sampler.uses_timesteps
                                                     else options.eta_ancestral)
    plan = plan_job_sampling(job, hr_model, options, params.denoising_strength, sampler=sampler, scheduler=scheduler,
                             steps=steps, eta=float(eta), fix_steps=True, hires=True,
                             first_schedule_type=first_plan.extra_params.get("Schedule type"),
                             total_steps=sampler.total_steps(params.steps))
    conditioning = HiresPrompts(target.upscale_to_x, target.upscale_to_y, sampler.total_steps(steps))
    return HiresFix(target, hr_model, sampler, plan, latent_mode, enlarge, prompts, negatives, conditioning), extra


def hires_prompts(params: Txt2ImgParams, styles: Mapping[str, tuple[str, str]] | None) -> tuple[list[str], list[str]]:
    """Every image's hires prompt and negative prompt (empty: the prompt's), styles applied (A1111
    ``setup_prompts``)."""
    count = len(params.prompt) if isinstance(params.prompt, list) else params.batch_size * params.n_iter
    lists = []
    for name, own, fallback in (("hr_prompt", params.hr_prompt, params.prompt),
                                ("hr_negative_prompt", params.hr_negative_prompt, params.negative_prompt)):
        value = fallback if own in ("", None) else own
        values = list(value) if isinstance(value, list) else [value or ""] * count
        if len(values) < count:
            raise ValueError(f"{name}: {len(values)} prompts for {count} images")
        lists.append(values)
    chosen = [(styles or {}).get(name, ("", "")) for name in params.styles]
    return ([apply_styles(p, [s[0] for s in chosen]) for p in lists[0]],
            [apply_styles(p, [s[1] for s in chosen]) for p in lists[1]])


def _picture_upscaler(name: str, resources: JobResources, options: Options, hooks: JobHooks) -> Enlarge | None:
    upscalers: Upscalers = resources.upscalers_for(options)
    info = upscalers.find(name, "hr_upscaler")
    if info.kind is Kind.NONE:
        return None
    return lambda image, scale: upscalers.upscale(image, scale, info, options, hooks.check)


def upscale_first_pass(fix: HiresFix, samples: torch.Tensor, first_model: Model, options: Options, hooks: JobHooks,
                       keep_first: Callable[[list[Image.Image]], None] | None = None) -> InitState:
    """The second pass's init state from a batch's first-pass latents (``first_model``: the model they were
    sampled on, whose VAE decodes them for a picture upscaler). ``keep_first`` gets the first pass's pictures
    (A1111's ``save_images_before_highres_fix``)."""
    target, model = fix.target, fix.model
    size = (target.upscale_to_y // LATENT_FACTOR, target.upscale_to_x // LATENT_FACTOR)
    with torch.inference_mode():
        if fix.latent_mode is not None:
            if keep_first is not None:
                keep_first(_pictures(decode_to_unit(first_model, samples, hooks)))
            mode, antialias = fix.latent_mode
            latents = torch.nn.functional.interpolate(samples, size=size, mode=mode, antialias=antialias)
            if options.inpainting_mask_weight < 1.0:
                source = model.decode_first_stage(latents, hooks)
                image_cond = model.image_conditioning(source, latents, None, True, options.inpainting_mask_weight,
                                                      hooks)
            else:
                image_cond = txt2img_conditioning(model, latents, target.upscale_to_x, target.upscale_to_y, options,
                                                  hooks)
        else:
            pictures = _pictures(decode_to_unit(first_model, samples, hooks))
            if keep_first is not None:
                keep_first(pictures)
            arrays = []
            for picture in pictures:
                hooks.check()
                resized = resize_image(0, picture, target.upscale_to_x, target.upscale_to_y, fix.enlarge)
                arrays.append(np.moveaxis(np.array(resized).astype(np.float32) / 255.0, 2, 0))
            pixels = torch.from_numpy(np.array(arrays)).to(samples.device)
            latents = model.encode_first_stage(pixels * 2 - 1, hooks)
            image_cond = model.image_conditioning(pixels, latents, None, True, options.inpainting_mask_weight, hooks)
    latents = target.truncate(latents)
    if image_cond.shape[-1] > 1:  # a spatial conditioning follows the crop (A1111 leaves it uncropped and fails)
        image_cond = target.truncate(image_cond)
    return InitState(PreparedInputs(images=[]), None, latents, None, image_cond, latents.shape[0], None, None)


def _pictures(pixels: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in [0, 1] → pictures, truncated to 8 bits as A1111 does."""
    return [Image.fromarray((255.0 * np.moveaxis(p.cpu().numpy(), 0, 2)).astype(np.uint8)) for p in pixels]

