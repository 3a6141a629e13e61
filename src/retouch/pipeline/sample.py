"""Stages 3–4: a batch's conditioning, then noise → denoiser stack → sampler (A1111 ``sample()``).

The denoiser stack, innermost first: the model denoiser for the sampler's family
(:func:`~retouch.sampling.plan.model_denoiser`) → classifier-free guidance
(:class:`~retouch.sampling.guidance.CFGDenoiser`) → the inpaint blend
(:class:`~retouch.sampling.inpaint.Masked`) → the interrupt check. The final blend of the sampled
latents is :meth:`InpaintBlend.apply`, the same object the stack blends with.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from retouch.conditioning import (
    Conditioning,
    MulticondLearnedConditioning,
    PromptContext,
    ScheduledPromptConditioning,
    get_learned_conditioning,
    get_multicond_learned_conditioning,
)
from retouch.control import Interrupted, JobControl
from retouch.models.model import Model
from retouch.models.padding import stop_when
from retouch.options import Options
from retouch.params import Job
from retouch.pipeline.latents import InitState, make_rng
from retouch.pipeline.prompts import Batch
from retouch.sampling.guidance import CFGDenoiser, Guidance
from retouch.sampling.inpaint import Interruptible, Masked
from retouch.sampling.noise import BrownianNoiseSampler
from retouch.sampling.plan import (
    SamplerSettings,
    SamplingPlan,
    model_denoiser,
    plan_sampling,
    run_sampler,
    start_latents,
)
from retouch.sampling.schedules import rescale_zero_terminal_snr


@dataclass(frozen=True)
class BatchConditioning:
    """The encoded prompts of one batch: positive (AND parts, schedules) and negative (schedules)."""

    cond: MulticondLearnedConditioning
    uncond: list[list[ScheduledPromptConditioning]]


@dataclass(frozen=True)
class SampledBatch:
    latents: torch.Tensor  # final latents, after the inpaint blend
    interrupted: bool  # the sampler was stopped (interrupt or skip); latents are its last prediction
    extra_params: dict[str, Any]  # infotext keys the sampling added, in A1111's order
    model: Model  # the model sampling ended on (the refiner after a switch): its VAE decodes the latents


def plan_job_sampling(job: Job, model: Model, options: Options, denoising_strength: float | None,
                      **overrides: Any) -> SamplingPlan:
    """The job's sampling plan on this model's noise schedule (with the schedule options applied), for the image
    source's ``denoising_strength`` (None: txt2img's whole schedule); ``overrides`` replace
    :class:`~retouch.sampling.plan.SamplerSettings` fields (the hires pass's sampler, steps, …)."""
    params = job.params
    noise = model.schedule
    alphas_cumprod = noise.alphas_cumprod
    extra: dict[str, Any] = {}
    if options.use_downcasted_alpha_bar:
        extra["Downcast alphas_cumprod"] = True
        alphas_cumprod = alphas_cumprod.half().float()
    if options.sd_noise_schedule == "Zero Terminal SNR":
        extra["Noise Schedule"] = options.sd_noise_schedule
        alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
    resolved = job.resolved
    settings = SamplerSettings(
        sampler=job.sampler, scheduler=job.scheduler, steps=params.steps, denoising_strength=denoising_strength,
        eta=resolved.eta, churn=resolved.churn, churn_from_options=resolved.churn_from_options)
    settings = dataclasses.replace(settings, **overrides)
    plan = plan_sampling(settings, dataclasses.replace(noise, alphas_cumprod=alphas_cumprod), options)
    return dataclasses.replace(plan, extra_params={**extra, **plan.extra_params})


class ModelSwitch(Protocol):
    """Called before each denoiser call; may replace the denoiser's model and conditioning (the refiner)."""

    model: Model  # the model sampling is on now
    extra_params: dict[str, Any]  # infotext keys it added

    def __call__(self, cfg: CFGDenoiser, sigma: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class EmbeddingUse:
    """Textual-inversion embeddings for a batch's prompts: how to find one by its name's tokens, and who hears
    which ones an encoding used (for ``TI hashes``)."""

    find: Callable[[Sequence[int], int], tuple[Any, int] | None] | None = None
    used: Callable[[list[Any]], None] | None = None


@dataclass(frozen=True)
class HiresPrompts:
    """How the hires pass encodes its prompts: at its target size, scheduled over its own steps."""

    width: int
    height: int
    steps: int  # the second pass's total steps (A1111 ``hires_steps``)


def encode_conditioning(model: Model, job: Job, options: Options, texts: list[str],
                        negatives: list[str], check: Callable[[], None] | None = None,
                        embeddings: EmbeddingUse | None = None, hires: HiresPrompts | None = None,
                        ) -> BatchConditioning:
    """Prompt schedules of a batch, encoded (A1111 ``setup_conds``: negative prompts first). ``texts`` are the
    prompts with extra-network tags removed; ``check()`` runs before each prompt's encoding; ``hires``: for the
    hires fix's second pass (A1111 ``calculate_hr_conds``)."""
    params = job.params
    steps = job.sampler.total_steps(params.steps)
    embeddings = embeddings or EmbeddingUse()
    width, height = (hires.width, hires.height) if hires else (params.width, params.height)
    hires_steps = hires.steps if hires else None
    positive = PromptContext(options, width, height, find_embedding=embeddings.find, used_embeddings=embeddings.used)
    negative = dataclasses.replace(positive, is_negative=True)
    with torch.inference_mode():
        uncond = get_learned_conditioning(model, negatives, steps, negative, hires_steps, check=check)
        cond = get_multicond_learned_conditioning(model, texts, steps, positive, hires_steps, check=check)
    if image_cfg_scale(job, model) not in (None, 1.0):
        if any(len(parts) > 1 for parts in cond.batch):
            raise ValueError("prompt: AND is not supported for InstructPix2Pix models unless image_cfg_scale is 1.0")
        if options.skip_early_cond > 0:  # A1111 fails mid-sampling here (its rows no longer line up)
            raise ValueError("skip_early_cond: not supported with InstructPix2Pix image guidance; set it to 0 or "
                             "image_cfg_scale to 1.0")
    return BatchConditioning(cond, uncond)


def image_cfg_scale(job: Job, model: Model) -> float | None:
    """Image guidance applies to instruct-pix2pix models only (A1111 sets it to None otherwise)."""
    return getattr(job.params, "image_cfg_scale", None) if model.is_pix2pix else None


def sample_batch(model: Model, job: Job, options: Options, plan: SamplingPlan, init: InitState,
                 conds: BatchConditioning, batch: Batch, control: JobControl,
                 switch: ModelSwitch | None = None) -> SampledBatch:
    """Noise the init latents with the batch's seeds and denoise them (A1111 ``sample()`` + the blend).
    ``switch``: the refiner's, called before each denoiser call (it may swap the model and conditioning)."""
    extra: dict[str, Any] = {}
    rng = make_rng(job, model, options, batch.seeds, batch.subseeds, shape=tuple(init.init_latent.shape[1:]))
    noise = rng.next()
    multiplier = job.resolved.noise_multiplier
    if multiplier != 1.0:
        extra["Noise multiplier"] = multiplier
        noise = noise * multiplier
    extra.update(plan.extra_params)
    cfg = CFGDenoiser(model_denoiser(plan, unet_call(model, options)), _guidance(model, job, options, plan, init, conds),
                      options, total_steps=plan.total_steps, exact_batch=options.deterministic_batches)
    cfg.before_call = switch
    denoiser: Any = cfg if init.blend is None else Masked(cfg, init.blend, before=plan.spec.uses_timesteps)
    noise_sampler: Any = lambda sigma, sigma_next: rng.next()  # noqa: E731 - per-image seeded draws
    if plan.spec.brownian_noise and not options.no_dpmpp_sde_batch_determinism:
        assert plan.full_sigmas is not None
        noise_sampler = BrownianNoiseSampler(init.init_latent, plan.full_sigmas, batch.seeds, options.randn_source)
    control.sampling_steps, control.sampling_step = plan.steps_to_run, 0
    interrupted = False
    try:
        with torch.inference_mode(), stop_when(control.should_stop):  # within one convolution of a UNet call
            samples = run_sampler(plan, Interruptible(denoiser, control.should_stop),
                                  start_latents(plan, init.init_latent, noise), noise_sampler=noise_sampler,
                                  callback=lambda d: _report_step(control, d))
    except Interrupted:
        samples = cfg.last_prediction if cfg.last_prediction is not None else init.init_latent
        interrupted = True
    extra.update(cfg.extra_params)
    if switch is not None:
        extra.update(switch.extra_params)
    if init.blend is not None:
        samples = init.blend.final(samples)
    return SampledBatch(samples, interrupted, extra, switch.model if switch is not None else model)


def _guidance(model: Model, job: Job, options: Options, plan: SamplingPlan, init: InitState,
              conds: BatchConditioning) -> Guidance:
    params = job.params
    empty: Conditioning | None = None
    if options.pad_cond_uncond:
        empty = model.encode_prompts([""], PromptContext(options, params.width, params.height))[0]
    s_min_uncond = job.resolved.s_min_uncond
    return Guidance(conds.cond, conds.uncond, params.cfg_scale * plan.spec.cfg_scale_multiplier,
                    init.image_conditioning, image_cfg_scale(job, model), s_min_uncond, empty)


def _report_step(control: JobControl, info: dict) -> None:
    control.sampling_step = info["i"]
    if control.on_step is not None:
        control.on_step(control, info)


def unet_call(model: Model, options: Options) -> Any:
    """``model.apply_model``, with A1111's ``upcast_attn`` option when it is on."""
    return functools.partial(model.apply_model, upcast_attention=True) if options.upcast_attn else model.apply_model
