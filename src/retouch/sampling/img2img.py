"""Running a sampler for img2img, as A1111 v1.10.1's ``sample_img2img`` (spec §4).

``run_img2img`` takes the clean ``init_latent``, the initial noise and the guidance, builds the
schedule (σ tail for k-diffusion samplers, timestep list for DDIM/PLMS/UniPC), noises the latent and
runs the sampler through the CFG denoiser. It returns the sampled latents and the infotext keys the
sampler adds, in A1111's order.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from retouch.options import Options
from retouch.sampling import registry
from retouch.sampling.denoisers import (
    CFGDenoiser,
    EpsDenoiser,
    Guidance,
    Interrupted,
    LCMDenoiser,
    LCMSchedule,
    TimestepEpsModel,
    VDenoiser,
)
from retouch.sampling.registry import SamplerInfo
from retouch.sampling.rng import ImageRNG, randn_seeded
from retouch.sampling.schedules import DiscreteSchedule, Scheduler, compute_sigmas
from retouch.sampling.timesteps import ddim_timesteps


@dataclass
class SamplerSettings:
    """The sampler-related parameters of one job (``None`` = take the option's default)."""

    sampler: SamplerInfo
    scheduler: Scheduler
    steps: int
    denoising_strength: float
    cfg_scale: float
    image_cfg_scale: float | None = None
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    s_min_uncond: float | None = None


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool) -> tuple[int, int]:
    """``(S, t_enc)``: schedule length and the index the img2img tail starts from (spec §4.2)."""
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if denoising_strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


@dataclass
class SamplingResult:
    latents: torch.Tensor
    extra_params: dict
    interrupted: bool = False


def run_img2img(
    apply_model: Callable,
    alphas_cumprod: torch.Tensor,
    v_prediction: bool,
    settings: SamplerSettings,
    options: Options,
    *,
    init_latent: torch.Tensor,
    noise: torch.Tensor,
    rng: ImageRNG,
    seeds: list[int],
    guidance: Guidance,
    mask: torch.Tensor | None = None,
    nmask: torch.Tensor | None = None,
    empty_cond: torch.Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SamplingResult:
    """Noise ``init_latent`` to the strength's level and denoise it (``noise`` already multiplied)."""
    sampler = settings.sampler
    extra: dict = {}
    steps, t_enc = img2img_steps(settings.steps, settings.denoising_strength, options.img2img_fix_steps)
    timestep_kind = sampler.kind == registry.TIMESTEP
    if timestep_kind:
        inner = TimestepEpsModel(apply_model, alphas_cumprod, v_prediction)
        sched, x = _timestep_start(sampler, steps, t_enc, alphas_cumprod, init_latent, noise, options, extra)
    else:
        schedule = LCMSchedule(alphas_cumprod) if sampler.kind == registry.LCM else \
            DiscreteSchedule.from_alphas_cumprod(alphas_cumprod, options.enable_quantization)
        denoiser_class = LCMDenoiser if sampler.kind == registry.LCM else VDenoiser if v_prediction else EpsDenoiser
        inner = denoiser_class(apply_model, schedule)
        sigmas = get_sigmas(sampler, settings.scheduler, steps, schedule, options, extra)
        sched = sigmas[steps - t_enc - 1:]
        if len(sched) == 0:
            raise ValueError(f"denoising_strength {settings.denoising_strength} leaves no sampling steps")
        x = init_latent + noise * sched[0]
        if options.img2img_extra_noise > 0:
            extra["Extra noise"] = options.img2img_extra_noise
            x = x + noise * options.img2img_extra_noise

    kwargs = _sampler_kwargs(sampler, settings, options, extra)
    denoiser = CFGDenoiser(
        inner, guidance, options, total_steps=sampler.total_steps(settings.steps), init_latent=init_latent,
        mask=mask, nmask=nmask, mask_before_denoising=timestep_kind, image_cfg_scale=settings.image_cfg_scale,
        empty_cond=empty_cond, should_stop=should_stop,
        pred_x0=_timestep_pred_x0(alphas_cumprod) if timestep_kind else None)

    noise_sampler = lambda sigma, sigma_next: rng.next()  # noqa: E731 - per-image seeded draws
    if timestep_kind:
        kwargs.update(alphas_cumprod=alphas_cumprod)
        if sampler.name == "DDIM CFG++":
            kwargs["cfg_pp"] = True
        if sampler.name == "UniPC":
            kwargs["options"] = options
        call = lambda: sampler.function(denoiser, x, sched, callback=callback, noise_sampler=noise_sampler,  # noqa: E731
                                        **kwargs)
    else:
        if sampler.brownian_noise and not options.no_dpmpp_sde_batch_determinism:
            noise_sampler = BrownianNoiseSampler(init_latent, sigmas, seeds, options.randn_source)
        if sampler.solver_type:
            kwargs["solver_type"] = sampler.solver_type
        if sampler.sigma_range_args:
            kwargs.update(sigma_min=sched[-2], sigma_max=sched[0])
            if "n" in inspect.signature(sampler.function).parameters:
                kwargs["n"] = len(sched) - 1
            call = lambda: sampler.function(denoiser, x, callback=callback, noise_sampler=noise_sampler,  # noqa: E731
                                            **kwargs)
        else:
            call = lambda: sampler.function(denoiser, x, sched, callback=callback, noise_sampler=noise_sampler,  # noqa: E731
                                            **kwargs)

    interrupted = False
    try:
        with _torchsde_source(options.randn_source):
            samples = call()
    except Interrupted:
        samples, interrupted = denoiser.last_latent, True
    extra.update(denoiser.extra_params)
    if denoiser.padded_cond_uncond:
        extra["Pad conds"] = True
    if denoiser.padded_cond_uncond_v0:
        extra["Pad conds v0"] = True
    return SamplingResult(samples, extra, interrupted)


def get_sigmas(sampler: SamplerInfo, scheduler: Scheduler, steps: int, schedule: DiscreteSchedule,
               options: Options, extra: dict) -> torch.Tensor:
    """The full σ schedule of ``steps`` steps, A1111 ``KDiffusionSampler.get_sigmas``."""
    discard = sampler.discard_next_to_last_sigma
    if options.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True
    steps += 1 if discard else 0
    name = scheduler.name
    if name == "automatic":
        name = sampler.scheduler or "automatic"
    resolved = registry.find_scheduler(name)
    m_sigma_min, m_sigma_max = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    sigma_min, sigma_max = (0.1, 10) if options.use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)
    if resolved.name == "automatic":
        sigmas = schedule.get_sigmas(steps)
    else:
        if resolved.label != "Automatic":
            extra["Schedule type"] = resolved.label
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
        sigmas = compute_sigmas(resolved.name, steps, schedule, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                beta_alpha=options.beta_dist_alpha, beta_beta=options.beta_dist_beta)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


def _timestep_start(sampler, steps, t_enc, alphas_cumprod, init_latent, noise, options, extra):
    discard = sampler.discard_next_to_last_sigma
    if options.always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True
    all_timesteps = ddim_timesteps(steps + (1 if discard else 0))
    sched = all_timesteps[:t_enc]
    if sampler.name == "UniPC" and len(sched) == 0:
        raise ValueError("UniPC cannot run with denoising_strength 0 (no timesteps); use another sampler")
    sqrt_ac = torch.sqrt(alphas_cumprod[all_timesteps[t_enc]])
    sqrt_one_minus_ac = torch.sqrt(1 - alphas_cumprod[all_timesteps[t_enc]])
    x = init_latent * sqrt_ac + noise * sqrt_one_minus_ac
    if options.img2img_extra_noise > 0:
        extra["Extra noise"] = options.img2img_extra_noise
        x = x + noise * options.img2img_extra_noise * sqrt_ac
    return sched, x


def _timestep_pred_x0(alphas_cumprod):
    def pred_x0(x_in, x_out, t):
        a_t = alphas_cumprod[t.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    return pred_x0


_SAMPLER_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
_INFOTEXT_KEYS = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}


def _sampler_kwargs(sampler: SamplerInfo, settings: SamplerSettings, options: Options, extra: dict) -> dict:
    """eta and the churn parameters, with A1111's precedence (spec §2.1, §9.13)."""
    kwargs: dict = {}
    timestep_kind = sampler.kind == registry.TIMESTEP
    if sampler.takes_eta:
        default = 0.0 if timestep_kind else 1.0
        eta = settings.eta if settings.eta is not None else (options.eta_ddim if timestep_kind else options.eta_ancestral)
        if eta != default:
            extra["Eta DDIM" if timestep_kind else "Eta"] = eta
        kwargs["eta"] = eta
    requested = {
        "s_churn": settings.s_churn if settings.s_churn is not None else options.s_churn,
        "s_tmin": settings.s_tmin if settings.s_tmin is not None else options.s_tmin,
        "s_tmax": (settings.s_tmax if settings.s_tmax is not None else options.s_tmax) or float("inf"),
        "s_noise": settings.s_noise if settings.s_noise is not None else options.s_noise,
    }
    from_options = {"s_churn": options.s_churn, "s_tmin": options.s_tmin,
                    "s_tmax": options.s_tmax or float("inf"), "s_noise": options.s_noise}
    for name in sampler.churn_params:
        kwargs[name] = requested[name]
        if from_options[name] != _SAMPLER_DEFAULTS[name]:  # a non-default option wins (A1111 quirk)
            kwargs[name] = from_options[name]
            extra[_INFOTEXT_KEYS[name]] = from_options[name]
    return kwargs


class BrownianNoiseSampler:
    """Per-image Brownian-tree noise for the SDE samplers, seeded by each image's seed (spec §5.3)."""

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int], source: str):
        import torchsde

        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        self.sign = 1
        w0 = torch.zeros_like(x[0])
        with _torchsde_source(source):
            self.trees = [torchsde.BrownianTree(sigma_min, w0, sigma_max, entropy=int(s)) for s in seeds]

    def __call__(self, sigma, sigma_next):
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1 if t0 < t1 else -1
        lo, hi = (t0, t1) if t0 < t1 else (t1, t0)
        with warnings.catch_warnings():  # σ recomputed through exp(log σ) lands a rounding below σ_min
            warnings.filterwarnings("ignore", message="Should have t")
            w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (t1 - t0).abs().sqrt()


@contextlib.contextmanager
def _torchsde_source(source: str):
    """With the "NV" source, torchsde's internal normal draws come from the Philox generator too."""
    if source != "NV":
        yield
        return
    from torchsde._brownian import brownian_interval

    original = brownian_interval._randn

    def nv_randn(size, dtype, device, seed):
        return randn_seeded(seed, size, "NV").to(device=device, dtype=dtype)

    brownian_interval._randn = nv_randn
    try:
        yield
    finally:
        brownian_interval._randn = original
