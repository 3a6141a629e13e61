"""How a job samples, as A1111 v1.10.1's ``sample_img2img`` (spec §4): planned once per job, run per batch.

:func:`plan_sampling` turns the resolved sampler settings and the model's noise schedule into a
:class:`SamplingPlan` (σ tail or timestep list, sampler keyword arguments, infotext keys) — pure
arithmetic, no model. Per batch, :func:`start_latents` noises the init latents to the plan's first
level, :func:`model_denoiser` wraps the UNet for the sampler's family, and :func:`run_sampler` calls
the sampler function as its :class:`~retouch.sampling.registry.SamplerSpec` says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from retouch.options import Options
from retouch.sampling import registry
from retouch.sampling.denoisers import (
    ApplyModel,
    EpsDenoiser,
    LCMDenoiser,
    LCMSchedule,
    TimestepEpsModel,
    VDenoiser,
)
from retouch.sampling.registry import CallStyle, SamplerKind, SamplerSpec
from retouch.sampling.schedules import AYS_SD15, DiscreteSchedule, NoiseSchedule, Scheduler, compute_sigmas
from retouch.sampling.timesteps import ddim_timesteps

_SAMPLER_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler-related parameters of one job, as :meth:`retouch.params.Img2ImgParams.validate` resolved them."""

    sampler: SamplerSpec
    scheduler: Scheduler
    steps: int
    denoising_strength: float | None  # None: txt2img, the whole schedule from pure noise
    eta: float = 1.0
    churn: Mapping[str, float] = field(default_factory=lambda: dict(_SAMPLER_DEFAULTS))  # s_churn, s_tmin, …
    churn_from_options: frozenset[str] = frozenset()  # forced by a non-default option: written to the infotext
    fix_steps: bool = False  # run exactly ``steps`` steps of the img2img tail (hires fix), whatever the option says
    hires: bool = False  # hires fix's second pass: its schedule type is "Hires schedule type"…
    first_schedule_type: str | None = None  # … when it differs from this, the first pass's "Schedule type"
    total_steps: int = 0  # what guidance counts its steps against (A1111 ``total_steps``); 0: the sampler's


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool) -> tuple[int, int]:
    """``(S, t_enc)``: schedule length and the index the img2img tail starts from (spec §4.2)."""
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if denoising_strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


@dataclass(frozen=True)
class SamplingPlan:
    """Everything about a job's sampling that does not depend on the batch.

    ``schedule`` is the σ tail the sampler walks (σ samplers) or the ascending timesteps it visits
    (timestep samplers); ``full_sigmas`` the whole σ schedule (the Brownian tree spans it).
    """

    spec: SamplerSpec
    alphas_cumprod: torch.Tensor
    v_prediction: bool
    schedule: torch.Tensor
    full_sigmas: torch.Tensor | None
    discrete: DiscreteSchedule | None  # σ samplers: the model's σ table
    latent_scale: torch.Tensor | None  # timestep samplers: √ᾱ at the start; σ samplers: None (1)
    noise_scale: torch.Tensor  # σ₀, or √(1−ᾱ) at the start
    extra_noise: float
    kwargs: dict[str, Any]
    extra_params: dict[str, Any] = field(default_factory=dict)
    steps_to_run: int = 0  # what the progress bar counts (A1111: t_enc + 1)
    total_steps: int = 1  # guidance's step count (skip early CFG, the refiner's switch by steps)
    sigma_range: tuple[float, float, int] | None = None  # txt2img DPM fast/adaptive: the model's σ range, n


def plan_sampling(settings: SamplerSettings, noise: NoiseSchedule, options: Options) -> SamplingPlan:
    """The plan for a job: schedule, starting noise level, sampler arguments and their infotext keys
    (added in A1111's order: schedule, extra noise, sampler arguments).

    img2img (a ``denoising_strength``) walks the schedule's tail from the init latent; txt2img (None) all of it
    from pure noise, as A1111's ``sample`` (σ₀·ε, or √(1+σ₀²)·ε with ``sgm_noise_multiplier``)."""
    spec = settings.sampler
    alphas_cumprod = noise.alphas_cumprod
    extra: dict[str, Any] = {}
    txt2img = settings.denoising_strength is None
    if settings.denoising_strength is None:
        steps, t_enc = settings.steps, settings.steps - 1
    else:
        steps, t_enc = img2img_steps(settings.steps, settings.denoising_strength,
                                     options.img2img_fix_steps or settings.fix_steps)
    discrete, full_sigmas, latent_scale, sigma_range = None, None, None, None
    if spec.uses_timesteps:
        schedule, start = _timestep_tail(spec, steps, None if txt2img else t_enc, options, extra)
        if txt2img:  # x = ε: the "init latent" is zero, scaled by 1
            latent_scale, noise_scale = torch.tensor(1.0), torch.tensor(1.0)
        else:
            a = alphas_cumprod[start]
            latent_scale, noise_scale = torch.sqrt(a), torch.sqrt(1 - a)
    else:
        discrete = LCMSchedule(alphas_cumprod) if spec.kind is SamplerKind.LCM else \
            DiscreteSchedule.from_alphas_cumprod(alphas_cumprod, options.enable_quantization)
        full_sigmas = get_sigmas(spec, settings.scheduler, steps, discrete, options, extra, noise.ays_sigmas,
                                 hires=(settings.first_schedule_type,) if settings.hires else None)
        schedule = full_sigmas[steps - t_enc - 1:]
        if len(schedule) == 0:
            raise ValueError(f"denoising_strength {settings.denoising_strength} leaves no sampling steps")
        noise_scale = schedule[0]
        if txt2img and options.sgm_noise_multiplier:
            extra["SGM noise multiplier"] = True
            noise_scale = torch.sqrt(1.0 + schedule[0] ** 2.0)
        if txt2img and spec.call is not CallStyle.SIGMAS:  # DPM fast / adaptive: the model's whole σ range
            sigma_range = (discrete.sigmas[0].item(), discrete.sigmas[-1].item(), steps)
    extra_noise = 0.0 if txt2img else options.img2img_extra_noise
    if extra_noise > 0:
        extra["Extra noise"] = extra_noise
    kwargs = {**sampler_kwargs(spec, settings, extra), **spec.fixed_kwargs()}
    kwargs.update({key: getattr(options, name) for key, name in spec.option_kwargs.items()})
    return SamplingPlan(spec=spec, alphas_cumprod=alphas_cumprod, v_prediction=noise.v_prediction, schedule=schedule,
                        full_sigmas=full_sigmas, discrete=discrete, latent_scale=latent_scale,
                        noise_scale=noise_scale, extra_noise=extra_noise, kwargs=kwargs, extra_params=extra,
                        steps_to_run=steps if txt2img else t_enc + 1,
                        total_steps=settings.total_steps or spec.total_steps(settings.steps), sigma_range=sigma_range)


def _timestep_tail(spec: SamplerSpec, steps: int, t_enc: int | None, options: Options,
                   extra: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps a DDIM-family sampler visits, and the timestep the img2img start is noised to (``t_enc``
    None: txt2img, all of them from pure noise)."""
    discard = spec.discard_next_to_last_sigma
    if options.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True
    all_timesteps = ddim_timesteps(steps + (1 if discard else 0))
    if t_enc is None:
        return all_timesteps, all_timesteps[-1]
    timesteps = all_timesteps[:t_enc]
    if spec.needs_a_step and len(timesteps) == 0:
        raise ValueError(f"{spec.name} cannot run with denoising_strength 0 (no timesteps); use another sampler")
    return timesteps, all_timesteps[t_enc]


def get_sigmas(sampler: SamplerSpec, scheduler: Scheduler, steps: int, schedule: DiscreteSchedule,
               options: Options, extra: dict, ays_sigmas: tuple[float, ...] = AYS_SD15,
               hires: tuple[str | None] | None = None) -> torch.Tensor:
    """The full σ schedule of ``steps`` steps, A1111 ``KDiffusionSampler.get_sigmas`` (``ays_sigmas``: the
    model family's Align Your Steps levels; ``hires``: in the hires fix's second pass, the first pass's recorded
    schedule type)."""
    discard = sampler.discard_next_to_last_sigma
    if options.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True
    steps += 1 if discard else 0
    name = scheduler.name
    if name == "automatic":
        name = sampler.scheduler or "automatic"
    resolved = registry.find_scheduler(name)
    if resolved.name == "automatic":
        sigmas = schedule.get_sigmas(steps)
    else:
        sigmas = _scheduled_sigmas(resolved, steps, schedule, options, extra, ays_sigmas, hires)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


def _scheduled_sigmas(resolved: Scheduler, steps: int, schedule: DiscreteSchedule, options: Options,
                      extra: dict, ays_sigmas: tuple[float, ...], hires: tuple[str | None] | None = None,
                      ) -> torch.Tensor:
    """A named schedule type, with the option overrides A1111 honours (and records). The hires pass records its
    schedule type only where it differs from the first pass's."""
    m_sigma_min, m_sigma_max = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    sigma_min, sigma_max = (0.1, 10) if options.use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)
    if hires is None:
        if resolved.label != "Automatic":
            extra["Schedule type"] = resolved.label
    elif resolved.label != hires[0]:
        extra["Hires schedule type"] = resolved.label
    if options.sigma_min != 0 and options.sigma_min != m_sigma_min:
        sigma_min = options.sigma_min
        extra["Schedule min sigma"] = options.sigma_min
    if options.sigma_max != 0 and options.sigma_max != m_sigma_max:
        sigma_max = options.sigma_max
        extra["Schedule max sigma"] = options.sigma_max
    rho = None
    if resolved.default_rho != -1 and options.rho != 0 and options.rho != resolved.default_rho:
        rho = options.rho
        extra["Schedule rho"] = options.rho
    if resolved.label == "Beta":
        extra["Beta schedule alpha"] = options.beta_dist_alpha
        extra["Beta schedule beta"] = options.beta_dist_beta
    return compute_sigmas(resolved.name, steps, schedule, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                          beta_alpha=options.beta_dist_alpha, beta_beta=options.beta_dist_beta, ays_sigmas=ays_sigmas)


_INFOTEXT_KEYS = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}


def sampler_kwargs(sampler: SamplerSpec, settings: SamplerSettings, extra: dict) -> dict:
    """eta and the churn parameters the sampler takes, and their infotext keys (spec §2.1, §9.13)."""
    kwargs: dict = {}
    if sampler.takes_eta:
        kwargs["eta"] = settings.eta
        if kwargs["eta"] != (0.0 if sampler.uses_timesteps else 1.0):
            extra["Eta DDIM" if sampler.uses_timesteps else "Eta"] = kwargs["eta"]
    for name in sampler.churn_params:
        kwargs[name] = settings.churn[name]
        if name in settings.churn_from_options:
            extra[_INFOTEXT_KEYS[name]] = settings.churn[name]
    return kwargs


# ---------------------------------------------------------------------------------------------
# Per batch
def model_denoiser(plan: SamplingPlan, apply_model: ApplyModel):
    """The UNet wrapped for the plan's sampler family: D(x, σ, …) for σ samplers, ε(x, t, …) for timestep ones."""
    if plan.spec.uses_timesteps:
        return TimestepEpsModel(apply_model, plan.alphas_cumprod, plan.v_prediction)
    assert plan.discrete is not None
    if plan.spec.kind is SamplerKind.LCM:
        return LCMDenoiser(apply_model, plan.discrete)
    return (VDenoiser if plan.v_prediction else EpsDenoiser)(apply_model, plan.discrete)


def start_latents(plan: SamplingPlan, init_latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``init_latent`` noised to the plan's first level (``noise`` already multiplied), plus the
    ``img2img_extra_noise`` option."""
    if plan.latent_scale is None:
        x = init_latent + noise * plan.noise_scale
        if plan.extra_noise > 0:
            x = x + noise * plan.extra_noise
        return x
    x = init_latent * plan.latent_scale + noise * plan.noise_scale
    if plan.extra_noise > 0:
        x = x + noise * plan.extra_noise * plan.latent_scale
    return x


NoiseSampler = Callable[[Any, Any], torch.Tensor]


def run_sampler(plan: SamplingPlan, denoiser: Any, x: torch.Tensor, *, noise_sampler: NoiseSampler,
                callback: Callable[[dict], None] | None) -> torch.Tensor:
    """Call the plan's sampler function the way its spec says."""
    spec, sched = plan.spec, plan.schedule
    common = dict(callback=callback, noise_sampler=noise_sampler, **plan.kwargs)
    if spec.call is CallStyle.TIMESTEPS:
        return spec.function(denoiser, x, sched, alphas_cumprod=plan.alphas_cumprod, **common)
    if plan.sigma_range is not None:
        sigma_min, sigma_max, n = plan.sigma_range
        if spec.call is CallStyle.SIGMA_RANGE_STEPS:
            return spec.function(denoiser, x, sigma_min=sigma_min, sigma_max=sigma_max, n=n, **common)
        return spec.function(denoiser, x, sigma_min=sigma_min, sigma_max=sigma_max, **common)
    if spec.call is CallStyle.SIGMA_RANGE:
        return spec.function(denoiser, x, sigma_min=sched[-2], sigma_max=sched[0], **common)
    if spec.call is CallStyle.SIGMA_RANGE_STEPS:
        return spec.function(denoiser, x, sigma_min=sched[-2], sigma_max=sched[0], n=len(sched) - 1, **common)
    return spec.function(denoiser, x, sched, **common)
